"""Video-compression corruptions (3DCC): H.265 CRF, H.265 ABR and H.264 bit errors, in memory through PyAV.

Reference protocol (3DCC ``create_video.py``), reproduced per image:

1. a camera-motion clip: the xy or the z motion path of :mod:`corruptions3d.functional.motion` (coin flip per
   image, as the reference picks one of its two clips), ``path_frames`` frames rendered in one batched
   splatting call, then played back (ping-pong, ``2·path_frames - 1`` frames, 25 fps);
2. the clip is encoded as the reference's moviepy mp4: libx264, CRF 23, preset medium, yuv420p, with SPS/PPS
   in the global header (as in an mp4 container);
3. ``h265_crf``: decode, re-encode with libx265 at CRF 24/26/32/39/41; ``h265_abr``: libx265 at
   ``bitrate = source bitrate / 2, 4, 8, 16, 32`` with the same maxrate and buffer size; ``bit_error``: the
   ffmpeg ``noise`` bitstream filter with ``amount`` 100000/50000/30000/20000/10000 on the H.264 packets
   (about one byte in ``amount`` changed), no re-encoding;
4. decode and keep the last frame: the un-shifted start view after inter-coding (the reference keeps its
   duplicated 120th frame, the same view).

Codec contexts are used directly (raw packets, no container, no files, no subprocess), so calls are safe in
parallel. Deviations: bit-error frames that fail to decode are skipped and the last decoded frame is kept
(the reference writes nothing then); a stream with no decodable frame gives a black image. Odd heights/widths
are cropped to even for coding (as the reference's ``crop=iw-mod(iw,2)``) and the missing last row/column is
copied from the input.
"""

from __future__ import annotations

import fractions
from collections.abc import Mapping
from typing import Any

import av
import numpy as np
import torch
from av.codec.context import Flags

from corruptions3d import random as crandom
from corruptions3d.core import check_geometry, check_rgb, register_corruption, resolve_params, seeds_for
from corruptions3d.functional.motion import PATH_STEPS, motion_camera, motion_path
from corruptions3d.geometry import fill_invalid_depth
from corruptions3d.random import Seeds
from corruptions3d.splatting import render_views

FPS = 25
SOURCE_CRF = 23
CRF_SEVERITIES = {"crf": (24, 26, 32, 39, 41)}
ABR_SEVERITIES = {"bitrate_divisor": (2, 4, 8, 16, 32)}
BIT_ERROR_SEVERITIES = {"amount": (100000, 50000, 30000, 20000, 10000)}
CODEC_BLOCK = 64
"""Clips are edge-padded to whole 64 px blocks (x265's coding tree units) and at least :data:`CODEC_MIN_SIDE` px
per side before coding, and the decoded frames are cropped back: the libx264 and libx265 in the PyAV 18 wheel
misbehave on small frames (run-to-run differences at 64², both codecs; heap corruption at 48², x265). 512² needs
no padding."""
CODEC_MIN_SIDE = 128


def motion_clip(
    rgb: torch.Tensor, depth: torch.Tensor, seeds: torch.Tensor, intrinsics: torch.Tensor | None, steps: int
) -> np.ndarray:
    """Ping-pong clips ``(B, 2·steps-1, H, W, 3)`` uint8 of the xy or z motion path (coin flip per image)."""
    k = motion_camera(rgb, intrinsics)
    ones = torch.ones(rgb.shape[0], device=rgb.device, dtype=rgb.dtype)
    rot, t_xy = motion_path("xy", rgb, depth, k, seeds, ones, steps)
    _, t_z = motion_path("z", rgb, depth, k, seeds, ones, steps)
    use_xy = crandom.rand(seeds, (), rgb.device, rgb.dtype, stream=5) < 0.5
    t = torch.where(use_xy.view(-1, 1, 1), t_xy, t_z)
    frames = render_views(rgb, depth, k, rot, t)
    frames = torch.cat([frames, frames.flip(1)[:, 1:]], 1)
    return (frames * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


def encode(frames: np.ndarray, codec: str, options: dict[str, str], bit_rate: int | None = None):
    """Encode ``(F,H,W,3)`` uint8 (even H, W) to packets; returns ``(packets, extradata)``."""
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    cc.time_base = fractions.Fraction(1, FPS)
    cc.framerate = FPS
    cc.flags |= Flags.global_header
    if bit_rate is not None:
        cc.bit_rate = bit_rate
    cc.options = options
    packets = []
    for i, f in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(f, format="rgb24")
        frame.pts = i
        packets += cc.encode(frame)
    packets += cc.encode(None)
    return packets, cc.extradata


def decode(packets, codec: str, extradata: bytes | None) -> list[np.ndarray]:
    """Decode packets to ``(H,W,3)`` uint8 frames; packets the decoder rejects (bit errors) are skipped."""
    cc = av.CodecContext.create(codec, "r")
    if extradata:
        cc.extradata = extradata
    frames = []
    for p in [*packets, None]:
        try:
            frames += cc.decode(p)
        except av.error.FFmpegError:
            continue
    return [f.to_ndarray(format="rgb24") for f in frames]


def codec_safe(clip: np.ndarray) -> np.ndarray:
    """Edge-pad a clip ``(F,H,W,3)`` to whole :data:`CODEC_BLOCK` px blocks and at least :data:`CODEC_MIN_SIDE` px
    per side (bottom/right)."""
    h, w = clip.shape[1:3]
    ph, pw = (max(-n % CODEC_BLOCK, CODEC_MIN_SIDE - n) for n in (h, w))
    return np.pad(clip, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else clip


def _h264(clip: np.ndarray):
    return encode(clip, "libx264", {"crf": str(SOURCE_CRF), "preset": "medium"})


def _transcode_h265(clip: np.ndarray, options: dict[str, str], bitrate_divisor: float | None = None) -> np.ndarray:
    h, w = clip.shape[1:3]
    packets, extra = _h264(codec_safe(clip))
    source = np.stack(decode(packets, "h264", extra))
    bit_rate = None
    if bitrate_divisor is not None:
        bit_rate = max(1, int(8 * sum(p.size for p in packets) * FPS / len(clip) / bitrate_divisor))
        options = {**options, "maxrate": str(bit_rate), "bufsize": str(bit_rate)}
    packets, extra = encode(source, "libx265", {**options, "x265-params": "log-level=none"}, bit_rate)
    return decode(packets, "hevc", extra)[-1][:h, :w]


def _bit_error(clip: np.ndarray, amount: int) -> np.ndarray:
    h, w = clip.shape[1:3]
    packets, extra = _h264(codec_safe(clip))
    bsf = av.BitStreamFilterContext(f"noise=amount={amount}", "h264")
    noisy = [q for p in packets for q in bsf.filter(p)] + bsf.filter(None)
    frames = decode(noisy, "h264", extra)
    return frames[-1][:h, :w] if frames else np.zeros_like(clip[-1])


def _clips(rgb, depth_euclidean, generator, intrinsics, path_frames) -> np.ndarray:
    """The per-image ping-pong motion clips ``(B,T,H',W',3)`` uint8, cropped to even sizes."""
    check_rgb(rgb)
    depth = fill_invalid_depth(check_geometry(rgb, depth_euclidean, "depth_euclidean"))
    if not 2 <= path_frames <= PATH_STEPS:
        raise ValueError(f"path_frames must be in 2..{PATH_STEPS}, got {path_frames}")
    h, w = rgb.shape[-2:]
    he, we = h - h % 2, w - w % 2
    if he < 2 or we < 2:
        raise ValueError(f"video corruptions need images of at least 2×2 pixels, got {h}×{w}")
    return motion_clip(rgb, depth, seeds_for(rgb, generator), intrinsics, path_frames)[:, :, :he, :we]


def _code(kind: str, rgb: torch.Tensor, clips: np.ndarray, values: list[float]) -> torch.Tensor:
    """Code each clip with its parameter value (the codec runs per clip) and keep the start view."""
    outs = []
    for clip, v in zip(clips, values):
        if kind == "crf":
            outs.append(_transcode_h265(clip, {"crf": f"{v:g}"}))
        elif kind == "abr":
            outs.append(_transcode_h265(clip, {}, bitrate_divisor=v))
        else:
            outs.append(_bit_error(clip, max(1, round(v))))
    he, we = clips.shape[2:4]
    coded = torch.from_numpy(np.stack(outs)).to(rgb.device, rgb.dtype).permute(0, 3, 1, 2) / 255
    out = rgb.clone()
    out[:, :, :he, :we] = coded
    return out


def _video(kind, rgb, depth_euclidean, severity, params, generator, intrinsics, path_frames, table) -> torch.Tensor:
    clips = _clips(rgb, depth_euclidean, generator, intrinsics, path_frames)
    p = resolve_params(table, severity, params, rgb)
    return _code(kind, rgb, clips, next(iter(p.values())).tolist())


def _video_severities(kind, rgb, depth_euclidean, severities, generator, intrinsics, path_frames, table):
    """``(B,S,3,H,W)``: the clip is rendered once and coded at every severity (each equals a single call)."""
    clips = _clips(rgb, depth_euclidean, generator, intrinsics, path_frames)
    rows = [next(iter(resolve_params(table, s, None, rgb).values())).tolist() for s in severities]
    return torch.stack([_code(kind, rgb, clips, row) for row in rows], 1)


def _register(name: str, kind: str, table: dict, ranges: dict, doc: str):
    def severities_op(rgb, depth_euclidean, severities, generator=None, intrinsics=None, path_frames=PATH_STEPS):
        return _video_severities(kind, rgb, depth_euclidean, severities, generator, intrinsics, path_frames, table)

    @register_corruption(
        name,
        family="3dcc",
        requires=("depth_euclidean",),
        optional=("intrinsics",),
        severities=table,
        ranges=ranges,
        stochastic=True,
        video=True,
        all_severities=severities_op,
    )
    def op(
        rgb: torch.Tensor,
        depth_euclidean: torch.Tensor,
        severity: int | None = None,
        params: Mapping[str, Any] | None = None,
        generator: Seeds = None,
        intrinsics: torch.Tensor | None = None,
        path_frames: int = PATH_STEPS,
    ) -> torch.Tensor:
        return _video(kind, rgb, depth_euclidean, severity, params, generator, intrinsics, path_frames, table)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"{doc} ``(B,3,H,W)``: the start view of a camera-motion clip after coding (see the module docstring).\n\n"
        "``depth_euclidean`` ``(B,1,H,W)`` metres; ``path_frames``: frames of the motion path (60 = reference)."
    )
    return op


h265_crf = _register("h265_crf", "crf", CRF_SEVERITIES, {"crf": (20.0, 45.0)}, "H.265 constant-rate-factor coding")
h265_abr = _register(
    "h265_abr", "abr", ABR_SEVERITIES, {"bitrate_divisor": (1.0, 32.0)}, "H.265 average-bitrate coding"
)
bit_error = _register(
    "bit_error", "bit_error", BIT_ERROR_SEVERITIES, {"amount": (10000.0, 100000.0)}, "H.264 bitstream bit errors"
)

__all__ = ["bit_error", "decode", "encode", "h265_abr", "h265_crf", "motion_clip"]
