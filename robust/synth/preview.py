"""Contact sheet: every domain of one view as a labelled tile grid (depth and labels colour-mapped)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

from robust.io import write_png
from robust.tasks import IGNORE_INDEX, mask_from_depth


def _tiles(sample: dict[str, torch.Tensor]) -> list[tuple[str, np.ndarray]]:
    """``(label, (H,W,3) float in [0,1])`` per displayable channel group."""
    tiles = []
    for name, t in sample.items():
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or name in ("intrinsics", "primitive_id", "lamps"):
            continue
        t = t.detach().cpu()
        if name.startswith("depth"):
            ok = mask_from_depth(t[0])
            d = t[0].clamp(max=float(t[0][ok].max()) if ok.any() else 1.0)
            d = (d - d[ok].min()) / (d[ok].max() - d[ok].min()).clamp(min=1e-6) if ok.any() else d * 0
            rgb = colormaps["turbo"](d.numpy())[..., :3] * ok.numpy()[..., None]
            tiles.append((name, rgb))
        elif name == "normal":
            tiles.append((name, ((t + 1) / 2).permute(1, 2, 0).numpy()))
        elif name == "segment_semantic":
            palette = np.random.default_rng(7).uniform(0.15, 1.0, (256, 3))
            palette[IGNORE_INDEX] = 0
            tiles.append((name, palette[t.long().clamp(0, 255).numpy()]))
        elif name == "rgb":
            tiles.append((name, t.permute(1, 2, 0).numpy()))
        else:
            t = t.float()
            tiles += [
                (f"{name}_{k}" if t.shape[0] > 1 else name, np.repeat(t[k].numpy()[..., None], 3, -1))
                for k in range(t.shape[0])
            ]
    return tiles


def contact_sheet(sample: dict[str, torch.Tensor], path: str | os.PathLike, columns: int = 6) -> Path:
    """Write a PNG grid of every domain in ``sample`` (canonical ``(C,H,W)`` tensors) with a label per tile."""
    tiles = _tiles(sample)
    if not tiles:
        raise ValueError("contact_sheet: the sample has no image domains")
    h, w = tiles[0][1].shape[:2]
    label_h = 12
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + label_h)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        x, y = (i % columns) * w, (i // columns) * (h + label_h)
        tile = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        sheet.paste(Image.fromarray(tile), (x, y + label_h))
        draw.text((x + 2, y), label, fill=(255, 255, 255))
    return write_png(path, np.asarray(sheet))
