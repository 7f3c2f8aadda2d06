"""Depth-layered defocus (``near_focus``/``far_focus``) as one gather kernel, without a blur stack.

The reference (:func:`corruptions3d.functional.defocus.depth_defocus`) blurs the whole image once per depth
quantile layer (9 separable Gaussian blurs) and mixes, per pixel, the two layers around its depth. Here each output
pixel computes only its own two blurs: for every tap ``(dy, dx)`` of the largest kernel it adds
``w_lo·k_lo[dy]·k_lo[dx] + w_hi·k_hi[dy]·k_hi[dx]`` times the replicate-clamped input, with the per-image,
per-layer taps of the reference (a ``(B, 9, 2R+1)`` σ-bank, zero-padded). A separable kernel with replicate
padding equals this 2D sum with clamped indices, so the results agree to float summation order (≤ 1e-5 on [0,1]
images). Quantiles (one sort per image) and σ-bank stay in torch: they are O(B·H·W log) and O(B·9·R) work.
Cost: (2R+1)² taps per pixel (R ≤ 10 for the severity table), compute-bound but a single pass over memory;
``torch.compile`` cannot express the per-pixel kernel choice without the stack.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from corruptions3d.functional.defocus import N_QUANTILES, coc_sigmas, layer_quantiles, sigma_bank

__all__ = ["depth_defocus", "sigma_bank"]


@triton.jit
def _defocus_kernel(x_ptr, d_ptr, q_ptr, bank_ptr, out_ptr, H, W, R, NQ: tl.constexpr, BLOCK: tl.constexpr):
    img = tl.program_id(1)
    hw = H * W
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < hw
    py = offs // W
    px = offs % W
    d = tl.load(d_ptr + img.to(tl.int64) * hw + offs, mask=mask, other=1.0)
    qp = q_ptr + img * (NQ + 1)
    below = tl.zeros([BLOCK], dtype=tl.int32)
    for j in range(NQ + 1):
        below += (tl.load(qp + j) < d).to(tl.int32)
    layer = tl.minimum(tl.maximum(below - 1, 0), NQ - 1)
    q_lo = tl.load(qp + layer)
    q_hi = tl.load(qp + layer + 1)
    t = (d - q_lo) / (q_hi - q_lo)
    w_lo = 1 - t * t
    w_hi = 1 - (1 - t) * (1 - t)
    total = w_lo + w_hi
    w_lo = w_lo / total
    w_hi = w_hi / total
    n = 2 * R + 1
    k_lo = bank_ptr + (img * (NQ + 1) + layer) * n
    k_hi = k_lo + n
    base = x_ptr + img.to(tl.int64) * 3 * hw
    acc_r = tl.zeros([BLOCK], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(n):
        a_lo = w_lo * tl.load(k_lo + i, mask=mask, other=0.0)
        a_hi = w_hi * tl.load(k_hi + i, mask=mask, other=0.0)
        row = tl.minimum(tl.maximum(py + i - R, 0), H - 1) * W
        for j in range(n):
            wgt = a_lo * tl.load(k_lo + j, mask=mask, other=0.0) + a_hi * tl.load(k_hi + j, mask=mask, other=0.0)
            src = row + tl.minimum(tl.maximum(px + j - R, 0), W - 1)
            acc_r += wgt * tl.load(base + src, mask=mask, other=0.0)
            acc_g += wgt * tl.load(base + hw + src, mask=mask, other=0.0)
            acc_b += wgt * tl.load(base + 2 * hw + src, mask=mask, other=0.0)
    out = out_ptr + img.to(tl.int64) * 3 * hw + offs
    tl.store(out, acc_r, mask=mask)
    tl.store(out + hw, acc_g, mask=mask)
    tl.store(out + 2 * hw, acc_b, mask=mask)


def depth_defocus(
    rgb: torch.Tensor, depth_euclidean: torch.Tensor, focus: torch.Tensor, aperture: torch.Tensor, block: int = 256
) -> torch.Tensor:
    """Fused :func:`corruptions3d.functional.defocus.depth_defocus`: ``(B,3,H,W)`` focusing at quantile index
    ``focus`` ``(B,)`` with ``aperture`` ``(B,)``; depth ``(B,1,H,W)`` metres."""
    depth, q = layer_quantiles(depth_euclidean)
    depth = depth.to(torch.float32).contiguous()
    bank = sigma_bank(coc_sigmas(q, focus, aperture)).to(torch.float32).contiguous()
    x = rgb.to(torch.float32).contiguous()
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    grid = (triton.cdiv(h * w, block), b)
    _defocus_kernel[grid](
        x, depth, q.to(torch.float32).contiguous(), bank, out, h, w, bank.shape[-1] // 2, NQ=N_QUANTILES, BLOCK=block
    )
    return out.to(rgb.dtype)
