"""4M-style encoder–decoder Transformer over masked token sets (``fourm/models/fm.py``, re-designed).

Pre-LN blocks, SwiGLU MLP, no biases, fixed sin-cos positions (2D for image grids, 1D otherwise) plus
one learned embedding per modality (shared by encoder and decoder). Image/vector targets are decoded
MAE-style (``mask_token`` + position + modality as queries); sequence targets with teacher forcing,
causal within the modality. Decoder self-attention is block-diagonal per modality; cross-attention sees
every valid encoder token plus one always-valid register token (so an empty input is well defined,
which classifier-free guidance relies on). All attention is ``F.scaled_dot_product_attention`` with
boolean masks built once per batch; shapes are fixed by the token budgets. Vocabularies are one
concatenated table (text modalities share one group); logits are restricted to the target's group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unified.modalities import Modality, resolve

ALL_MODALITIES = (
    "rgb",
    "depth",
    "normal",
    "reshading",
    "edges",
    "segment_semantic",
    "caption",
    "det",
    "metadata",
    "global_feature",
)


@dataclass
class ModelConfig:
    modalities: tuple[str, ...] = ALL_MODALITIES
    grid: int = 14
    """Image token grid side (image size / 16)."""
    dim: int = 768
    encoder_depth: int = 12
    decoder_depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    grad_checkpointing: bool = False


SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 64, "encoder_depth": 2, "decoder_depth": 2, "heads": 4},
    "B": {"dim": 768, "encoder_depth": 12, "decoder_depth": 12, "heads": 12},
    "L": {"dim": 1024, "encoder_depth": 24, "decoder_depth": 24, "heads": 16},
    "XL": {"dim": 2048, "encoder_depth": 24, "decoder_depth": 24, "heads": 32},
}
"""Trunk sizes of 4M (B/L/XL: 198M/705M/2.8B trunk parameters) and a tiny test size."""


def model_config(size: str, **overrides) -> ModelConfig:
    if size not in SIZES:
        raise KeyError(f"unknown model size {size!r}; known: {list(SIZES)}")
    return ModelConfig(**{**SIZES[size], **overrides})


def sincos_1d(n: int, dim: int) -> torch.Tensor:
    """``(n, dim)`` fixed 1D sin-cos embedding."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([ang.sin(), ang.cos()], 1).float()


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """``(h*w, dim)`` fixed 2D sin-cos embedding (MoCo-v3 layout: x then y, each sin|cos)."""
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ox, oy = xs.flatten()[:, None] * omega, ys.flatten()[:, None] * omega
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], 1).float()


class Attention(nn.Module):
    """Multi-head attention (self when ``context is x``), bias-free, via SDPA with a boolean mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.proj = (nn.Linear(dim, n * dim, bias=False) for n in (1, 2, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = int(2 * mlp_ratio * dim / 3)
        self.fc1, self.fc3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, bias=False)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = (
            _norm(dim),
            Attention(dim, heads),
            _norm(dim),
            SwiGLU(dim, mlp_ratio),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.self_attn = _norm(dim), Attention(dim, heads)
        self.query_norm, self.context_norm, self.cross_attn = _norm(dim), _norm(dim), Attention(dim, heads)
        self.norm2, self.mlp = _norm(dim), SwiGLU(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, self_mask: torch.Tensor, cross_mask: torch.Tensor
    ) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, self_mask)
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context), cross_mask)
        return x + self.mlp(self.norm2(x))


class UnifiedModel(nn.Module):
    """Any-to-any masked model over the batch layout of :mod:`unified.masking`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.modalities: list[Modality] = resolve(config.modalities, config.grid)
        d, mods = config.dim, self.modalities
        groups: dict[str, tuple[int, int]] = {}
        for m in mods:
            if m.group in groups and groups[m.group][1] != m.vocab_size:
                raise ValueError(f"modalities of vocabulary group {m.group!r} disagree on vocab_size")
            groups.setdefault(m.group, (sum(v for _, v in groups.values()), m.vocab_size))
        self.vocab_total = sum(v for _, v in groups.values())
        group_ids = {g: i for i, g in enumerate(groups)}
        self.register_buffer("mod_offset", torch.tensor([groups[m.group][0] for m in mods]), persistent=False)
        self.register_buffer("mod_group", torch.tensor([group_ids[m.group] for m in mods]), persistent=False)
        self.register_buffer("mod_parallel", torch.tensor([not m.is_sequence for m in mods]), persistent=False)
        vocab_group = torch.cat([torch.full((v,), group_ids[g]) for g, (_, v) in groups.items()])
        self.register_buffer("vocab_group", vocab_group, persistent=False)
        self.max_positions = max(m.max_tokens + 2 for m in mods)
        pos = torch.zeros(len(mods), self.max_positions, d)
        for i, m in enumerate(mods):
            table = sincos_2d(config.grid, config.grid, d) if m.kind == "image" else sincos_1d(self.max_positions, d)
            pos[i, : len(table)] = table[: self.max_positions]
        self.register_buffer("pos_table", pos.flatten(0, 1), persistent=False)

        self.enc_tok, self.dec_tok = nn.Embedding(self.vocab_total, d), nn.Embedding(self.vocab_total, d)
        self.mod_emb = nn.Parameter(torch.zeros(len(mods), d))
        self.mask_token, self.register = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.encoder = nn.ModuleList(
            EncoderBlock(d, config.heads, config.mlp_ratio) for _ in range(config.encoder_depth)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(d, config.heads, config.mlp_ratio) for _ in range(config.decoder_depth)
        )
        self.enc_norm, self.dec_norm = _norm(d), _norm(d)
        self.context_proj = nn.Linear(d, d, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=0.02)
        for p in (self.mod_emb, self.mask_token, self.register):
            nn.init.normal_(p, std=0.02)

    def modality_index(self, name: str) -> int:
        names = [m.name for m in self.modalities]
        if name not in names:
            raise KeyError(f"modality {name!r} is not in this model ({names})")
        return names.index(name)

    def _embed_pos(self, mod: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.pos_table[mod * self.max_positions + pos] + self.mod_emb[mod]

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.config.grad_checkpointing and self.training:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder over ``enc_*`` slots; returns (context ``(B,1+E,D)``, key-valid mask ``(B,1,1,1+E)``)."""
        mod, valid = batch["enc_mod"], batch["enc_valid"]
        pe = self._embed_pos(mod, batch["enc_pos"])
        x = (self.enc_tok(self.mod_offset[mod] + batch["enc_ids"]) + pe) * valid[..., None]
        x = torch.cat([self.register.expand(x.shape[0], 1, -1), x], 1)
        key_valid = torch.cat([valid.new_ones(valid.shape[0], 1), valid], 1)[:, None, None, :]
        for block in self.encoder:
            x = self._run(block, x, key_valid)
        pe = torch.cat([pe.new_zeros(pe.shape[0], 1, pe.shape[2]), pe * valid[..., None]], 1)
        return self.context_proj(self.enc_norm(x)) + pe, key_valid

    def decoder_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B,1,T,T)`` boolean: same modality, causal for sequences, valid keys; the diagonal always on."""
        mod, pos, valid = batch["dec_mod"], batch["dec_pos"], batch["dec_valid"]
        same = mod[:, :, None] == mod[:, None, :]
        order = self.mod_parallel[mod][:, :, None] | (pos[:, None, :] <= pos[:, :, None])
        eye = torch.eye(mod.shape[1], dtype=torch.bool, device=mod.device)
        return ((same & order & valid[:, None, :]) | eye)[:, None]

    def decode(
        self, batch: dict[str, torch.Tensor], context: torch.Tensor, context_valid: torch.Tensor
    ) -> torch.Tensor:
        """Decoder over ``dec_*`` slots; returns logits ``(B,T,V)`` restricted to each slot's vocabulary."""
        mod = batch["dec_mod"]
        tok = self.dec_tok(self.mod_offset[mod] + batch["dec_ids"])
        x = torch.where(self.mod_parallel[mod][..., None], self.mask_token, tok) + self._embed_pos(
            mod, batch["dec_pos"]
        )
        self_mask = self.decoder_mask(batch)
        for block in self.decoder:
            x = self._run(block, x, context, self_mask, context_valid)
        logits = self.dec_norm(x) @ self.dec_tok.weight.T
        return logits.masked_fill(self.vocab_group[None, None, :] != self.mod_group[mod][..., None], float("-inf"))

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B,T,V)`` (global vocabulary ids: ``mod_offset[dec_mod] + local id``)."""
        return self.decode(batch, *self.encode(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training loss: mean over modalities (present in the batch) of each modality's mean CE (4M
        ``loss_type='mod'``). Returns (loss, per-modality mean CE ``(M,)``, per-modality target counts
        ``(M,)``) without any host sync."""
        logits = self.logits(batch).float()
        mod = batch["dec_mod"]
        target = (self.mod_offset[mod] + batch["dec_target"]).unsqueeze(-1)
        ce = torch.logsumexp(logits, -1) - logits.gather(-1, target).squeeze(-1)
        w = batch["dec_valid"].float()
        m = len(self.modalities)
        sums = torch.zeros(m, device=ce.device).index_add(0, mod.flatten(), (ce * w).flatten())
        counts = torch.zeros(m, device=ce.device).index_add(0, mod.flatten(), w.flatten())
        per_mod = sums / counts.clamp_min(1)
        present = (counts > 0).float()
        return (per_mod * present).sum() / present.sum().clamp_min(1), per_mod.detach(), counts


def train_flops(model: UnifiedModel, input_tokens: int, target_tokens: int) -> float:
    """Training FLOPs per sample (forward + backward = 3x forward).

    ``6 * (P_enc * E + (P_dec + P_ctx + P_head) * T) + 3 * 4 * D * (L_enc * E^2 + L_dec * (T^2 + T * E))``:
    each encoder token multiplies through the encoder blocks, each decoder token through the decoder
    blocks, the context projection (counted per decoder token) and the tied ``V x D`` head; attention
    adds ``4 * n_q * n_k * D`` per layer forward (QK^T and AV, full masks as SDPA computes them).
    """
    cfg = model.config
    p_enc = sum(p.numel() for p in model.encoder.parameters())
    p_dec = sum(p.numel() for p in model.decoder.parameters())
    p_dec += model.context_proj.weight.numel() + model.dec_tok.weight.numel()
    e, t = input_tokens + 1, target_tokens
    attn = 4 * cfg.dim * (cfg.encoder_depth * e * e + cfg.decoder_depth * (t * t + t * e))
    return 6.0 * (p_enc * e + p_dec * t) + 3.0 * attn


def trunk_parameters(config: ModelConfig) -> int:
    """Parameters of the encoder and decoder blocks (the 4M README's trunk count), counted on the meta device."""
    with torch.device("meta"):
        enc, dec = (
            EncoderBlock(config.dim, config.heads, config.mlp_ratio),
            DecoderBlock(config.dim, config.heads, config.mlp_ratio),
        )
    return config.encoder_depth * count_parameters(enc) + config.decoder_depth * count_parameters(dec)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
