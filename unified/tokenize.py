"""Pre-tokenize a Taskonomy-format folder into webdataset token shards.

``python -m unified.tokenize --data DIR --out SHARDS --tokenizers TOK --modalities rgb depth caption metadata``

``TOK`` holds one VQ-VAE per image modality (``TOK/<modality>.pt``, from ``unified.train_tokenizer``) and
the WordPiece tokenizer ``TOK/text.json`` for sequence modalities. Captions and boxes come from
``--annotations`` (see :func:`unified.sequences.load_annotations`) or, for captions, from per-building
``scene.json`` files; metadata is computed from the view (image statistics, object counts).
Resumable: shard ``i`` always holds views ``[i*shard_size, (i+1)*shard_size)`` of the sorted view list,
and complete shards (renamed into place only when written) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from robust.io import DataError, ResizeCrop, TaskonomyDataset, collate_views
from robust.runs import parse_config, progress
from unified.modalities import Modality, get_modality
from unified.sequences import TextTokenizer, image_metadata, load_annotations, scene_annotations
from unified.shards import SHARD_PATTERN, view_key, write_shard
from unified.vqvae import VQVAE


@dataclass
class TokenizeConfig:
    """Tokenize a Taskonomy-format folder into webdataset token shards."""

    data: str = field(default=None, metadata={"help": "Taskonomy-format root"})
    out: str = field(default=None, metadata={"help": "output folder for shard-NNNNN.tar"})
    tokenizers: str = field(default=None, metadata={"help": "folder with <modality>.pt VQ-VAEs and text.json"})
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth", "normal", "reshading"])
    annotations: str = field(default="", metadata={"help": "per-view captions/boxes JSON (optional)"})
    image_size: int = 224
    shard_size: int = 1000
    batch_size: int = 32
    workers: int = 2
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


class ViewTokenizer:
    """Tokenizes collated view batches into per-view ``{modality: ids}`` dicts."""

    def __init__(self, cfg: TokenizeConfig, data_root: str):
        self.mods: list[Modality] = [get_modality(n) for n in cfg.modalities]
        tok = Path(cfg.tokenizers) if cfg.tokenizers else None
        self.vq: dict[str, VQVAE] = {}
        for m in self.mods:
            if m.kind == "vector":
                raise ValueError(f"{m.name}: vector modalities are not read from Taskonomy folders")
            if m.kind == "image":
                if tok is None or not (tok / f"{m.name}.pt").is_file():
                    raise FileNotFoundError(f"--tokenizers: no VQ-VAE for {m.name!r} at {tok}/{m.name}.pt")
                self.vq[m.name] = VQVAE.load(tok / f"{m.name}.pt", cfg.device)
        self.text = None
        if any(m.is_sequence for m in self.mods):
            if tok is None:
                raise FileNotFoundError("--tokenizers: sequence modalities need TOK/text.json")
            self.text = TextTokenizer.load(tok / "text.json")
        self.annotations = load_annotations(cfg.annotations) if cfg.annotations else {}
        self.scenes = scene_annotations(data_root)
        self.device = cfg.device

    def domains(self) -> list[str]:
        names = {m.domain for m in self.mods if m.kind == "image"}
        if any(m.name == "metadata" for m in self.mods):
            names |= {"rgb", "depth_euclidean"}
        return sorted(names)

    def _text(self, key, name: str) -> list[int]:
        k = view_key(key)
        ann, scene = self.annotations.get(k, {}), self.scenes.get(key.building, {})
        if name == "caption":
            if "caption" not in ann and "caption" not in scene:
                raise DataError(f"view {k}: no caption (no annotation entry and no {key.building}/scene.json)")
            return self.text.encode(ann.get("caption", scene.get("caption")))
        if name == "det":
            if "boxes" not in ann:
                raise DataError(f"view {k}: no boxes in the annotations file")
            return self.text.encode_boxes([tuple(b) for b in ann["boxes"]])
        raise KeyError(name)

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[tuple[str, dict[str, np.ndarray]]]:
        keys = batch["key"]
        per_mod: dict[str, list[np.ndarray]] = {}
        for m in self.mods:
            if m.kind == "image":
                ids = self.vq[m.name].encode(batch[m.domain].to(self.device)).flatten(1)
                per_mod[m.name] = list(ids.cpu().numpy())
            elif m.name == "metadata":
                stats = {k: v.tolist() for k, v in image_metadata(batch).items()}
                rows = []
                for i, key in enumerate(keys):
                    values = {k: v[i] for k, v in stats.items()}
                    scene = self.scenes.get(key.building, {})
                    values.update({k: scene[k] for k in ("objects", "classes") if k in scene})
                    rows.append(np.array(self.text.encode_metadata(values)[: m.max_tokens]))
                per_mod[m.name] = rows
            else:
                per_mod[m.name] = [np.array(self._text(key, m.name)[: m.max_tokens]) for key in keys]
        return [(view_key(key), {n: v[i] for n, v in per_mod.items()}) for i, key in enumerate(keys)]


def tokenize_dataset(cfg: TokenizeConfig) -> list[Path]:
    """Write (or resume) all shards; returns the shard paths."""
    for name in ("data", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required")
    tokenizer = ViewTokenizer(cfg, cfg.data)
    ds = TaskonomyDataset(cfg.data, tokenizer.domains(), transform=ResizeCrop(cfg.image_size, cfg.image_size))
    n_shards = math.ceil(len(ds) / cfg.shard_size)
    paths = [Path(cfg.out) / SHARD_PATTERN.format(i) for i in range(n_shards)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    for i in progress(todo, desc=f"tokenize ({n_shards - len(todo)}/{n_shards} shards done)"):
        part = Subset(ds, range(i * cfg.shard_size, min(len(ds), (i + 1) * cfg.shard_size)))
        loader = DataLoader(part, cfg.batch_size, num_workers=cfg.workers, collate_fn=collate_views)
        write_shard(paths[i], (s for batch in loader for s in tokenizer(batch)))
    return paths


def main(argv: list[str] | None = None) -> None:
    tokenize_dataset(parse_config(TokenizeConfig, argv))


if __name__ == "__main__":
    main()
