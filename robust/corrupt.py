"""Write corrupted datasets: every corruption × severity of a Taskonomy root or an image folder.

Output layout (as ImageNet-C and 3DCC): ``OUT/<corruption>/<severity>/[<building>/]<rgb file name>`` for
Taskonomy data, ``OUT/<corruption>/<severity>/<class>/<file>.png`` for image folders, plus
``OUT/manifest.json``. Each image's seed is derived from (``--seed``, its name, corruption), so
outputs do not depend on batch size or order, and re-running resumes: finished files are skipped.

Python: ``corrupt_dataset(CorruptConfig(data_root=..., out=...))``.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

import corruptions3d
from corruptions3d.geometry import default_intrinsics
from corruptions3d.random import mix
from robust.io import (
    DataError,
    ResizeCrop,
    TaskonomyDataset,
    TaskonomyIndex,
    ViewKey,
    atomic_write_bytes,
    atomic_write_text,
    collate_views,
)
from robust.io.png import encode_png, read_png
from robust.runs import environment, parse_config, progress, to_jsonable
from robust.tasks import get_domain

GEOMETRY = ("depth_euclidean", "depth_zbuffer", "reshading", "relighting", "normal", "intrinsics")
SYNTH_ROOT = "data/synth"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPEG", ".bmp", ".webp")


@dataclass
class CorruptConfig:
    """Corrupt a dataset with 3D Common Corruptions and ImageNet-C at severities 1-5."""

    data_root: str | None = field(
        default=None,
        metadata={
            "help": "dataset root (Taskonomy layout, or class folders for --dataset folder); "
            f"default: the embedded synthetic dataset, generated into {SYNTH_ROOT} if missing"
        },
    )
    out: str = field(default="outputs/corrupted", metadata={"help": "output root"})
    dataset: str = field(default="taskonomy", metadata={"help": "input format", "choices": ["taskonomy", "folder"]})
    corruptions: str = field(
        default="all",
        metadata={"help": "comma list of names, or all | 3dcc | imagenet_c | fast (all without video codecs)"},
    )
    severities: str = field(default="1-5", metadata={"help": "e.g. 1-5, 3 or 1,3,5"})
    batch_size: int = field(default=8, metadata={"help": "images per batch"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto", "choices": ["cpu", "cuda", "auto"]})
    seed: int = field(default=0, metadata={"help": "base seed; each image's seed also depends on its name"})
    resume: bool = field(default=True, metadata={"help": "skip outputs that exist (--no-resume rewrites them)"})
    preview: bool = field(default=False, metadata={"help": "write OUT/preview.png: corruptions × severities grid"})
    workers: int = field(default=2, metadata={"help": "data-loading processes and PNG-writer threads"})
    size: int | None = field(default=None, metadata={"help": "resize shorter side + centre crop to SIZE (folder data)"})
    depth_root: str | None = field(
        default=None, metadata={"help": "folder data: 16-bit depth PNGs (value/512 m) mirroring data-root's tree"}
    )
    depth_model: str | None = field(
        default=None,
        metadata={
            "help": "robust.train checkpoint of an rgb->depth_euclidean model: predicts depth for data without it"
        },
    )


def parse_severities(text: str) -> list[int]:
    """``"1-5"`` -> [1..5]; ``"1,3"`` -> [1, 3]; validates the 1..5 range."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            out += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"bad --severities {text!r}: use e.g. 1-5, 3 or 1,3,5") from None
    if not out or any(not 1 <= s <= 5 for s in out):
        raise ValueError(f"severities must lie in 1..5, got {text!r}")
    return sorted(set(out))


def select_corruptions(spec: str) -> list[str]:
    """Resolve ``--corruptions`` to registry names (unknown names raise a clear error)."""
    groups = {
        "all": corruptions3d.list_corruptions(),
        "fast": corruptions3d.list_corruptions(video=False),
        "3dcc": corruptions3d.list_corruptions("3dcc"),
        "imagenet_c": corruptions3d.list_corruptions("imagenet_c"),
    }
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in groups:
            names += groups[item]
        else:
            corruptions3d.get_corruption(item)  # raises KeyError listing the known names
            names.append(item)
    return list(dict.fromkeys(names))


def image_seed(base: int, name: str, corruption: str) -> int:
    """Seed of one image under one corruption: independent of batch composition and run order.

    It does not depend on the severity: as in the reference, an image keeps one camera path (motion
    blur, video) or one noise realisation across severities, and only the strength changes.
    """
    return mix(base, zlib.crc32(name.encode()), zlib.crc32(corruption.encode()))


def image_seeds(keys: list[ViewKey | str], base: int, corruption: str) -> torch.Tensor:
    """Per-image int64 seeds of a batch (see :func:`image_seed`): the images the CLI writes."""
    return torch.tensor([image_seed(base, output_name(k), corruption) for k in keys], dtype=torch.int64)


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` trees (any depth) as ``{"rgb", "key"}`` samples; optional depth tree."""

    def __init__(self, root: str | Path, size: int | None = None, depth_root: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder does not exist")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix in IMAGE_EXTS and p.is_file())
        if not self.files:
            raise DataError(f"{self.root}: empty root: no images ({', '.join(IMAGE_EXTS)})")
        self.size = size
        self.depth_root = Path(depth_root) if depth_root else None

    def __len__(self) -> int:
        return len(self.files)

    def depth_path(self, rel: Path) -> Path:
        return self.depth_root / rel.with_suffix(".png")

    def __getitem__(self, i: int) -> dict:
        path = self.files[i]
        rel = path.relative_to(self.root)
        try:
            with Image.open(path) as img:
                rgb = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        except Exception as e:
            raise DataError(f"{path}: unreadable image ({e})") from e
        sample = {"rgb": rgb, "key": str(rel)}
        if self.depth_root is not None:
            sample["depth_euclidean"] = get_domain("depth_euclidean").decode(read_png(self.depth_path(rel), 16))
            if sample["depth_euclidean"].shape[-2:] != rgb.shape[-2:]:
                raise DataError(f"{self.depth_path(rel)}: depth size differs from {path}")
        if self.size is not None:
            key = sample.pop("key")
            sample = ResizeCrop(self.size, self.size)(sample, i)
            sample["key"] = key
        return sample


def _collate(samples: list[dict]) -> dict:
    shapes = {tuple(s["rgb"].shape) for s in samples}
    if len(shapes) > 1:
        raise DataError(f"images in one batch differ in size {sorted(shapes)}: pass --size or --batch-size 1")
    return collate_views(samples)


def output_name(key: ViewKey | str) -> str:
    """Relative output path of one image: ``[<building>/]<rgb file name>`` or ``<class>/<file>.png``."""
    if isinstance(key, ViewKey):
        name = key.file_name("rgb")
        return f"{key.building}/{name}" if key.building else name
    return str(Path(key).with_suffix(".png"))


class _Writer:
    """Background PNG encoding + atomic writes, so the device never waits on disk."""

    def __init__(self, threads: int) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(max(1, threads))]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            path, array = item
            try:
                atomic_write_bytes(path, encode_png(array))
            except BaseException as e:  # surfaced in close()
                self.errors.append(e)
            finally:
                self.q.task_done()
        self.q.task_done()

    def put(self, path: Path, array: np.ndarray) -> None:
        if self.errors:
            raise self.errors[0]
        self.q.put((path, array))

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def _plan(cfg: CorruptConfig, available: set[str]) -> tuple[list[str], dict[str, str]]:
    """Corruptions that can run on this data, and the reason for each skipped one."""
    can_derive = "depth_euclidean" in available
    run, skipped = [], {}
    for name in select_corruptions(cfg.corruptions):
        c = corruptions3d.get_corruption(name)
        missing = [
            d for d in c.requires
            if d not in available and not (can_derive and d in c.derivable) and d != "intrinsics"
        ]  # fmt: skip
        if "scene" in missing:
            skipped[name] = "needs a scene mesh (robust.synth data carries one); this dataset has none"
        elif missing:
            skipped[name] = f"needs {missing}, which the dataset lacks" + (
                "" if can_derive else " (no depth to derive them from)"
            )
        else:
            run.append(name)
    return run, skipped


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(name)


def depth_predictor(path: str, device: torch.device):
    """``batch -> batch`` adding ``depth_euclidean`` predicted by a trained rgb->depth model (at its train size)."""
    from robust.train import load_predictor

    predict, train_cfg = load_predictor(path, device)
    if train_cfg.in_domains != ["rgb"] or "depth_euclidean" not in train_cfg.out_domains:
        raise ValueError(
            f"{path}: --depth-model must map rgb -> depth_euclidean, got {train_cfg.in_domains} -> "
            f"{train_cfg.out_domains}"
        )
    size = (train_cfg.image_size, train_cfg.image_size)

    def add_depth(batch: dict) -> dict:
        rgb = batch["rgb"]
        x = F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
        d = predict({"rgb": x})["depth_euclidean"].float().clamp(min=1e-3)
        return {**batch, "depth_euclidean": F.interpolate(d, size=rgb.shape[-2:], mode="bilinear", align_corners=False)}

    return add_depth


def _make_dataset(cfg: CorruptConfig, names: list[str]) -> tuple[Dataset, set[str]]:
    predicted = {"depth_euclidean"} if cfg.depth_model else set()
    if cfg.dataset == "folder":
        ds = ImageFolderDataset(cfg.data_root, cfg.size, cfg.depth_root)
        return ds, {"rgb"} | ({"depth_euclidean"} if cfg.depth_root else predicted)
    index = TaskonomyIndex.scan(cfg.data_root)
    on_disk = set(index.domains())
    available = {"rgb"} | (on_disk & set(GEOMETRY)) | ({"intrinsics"} if "point_info" in on_disk else set())
    entries = [corruptions3d.get_corruption(n) for n in names]
    wanted = {d for c in entries for d in (*c.requires, *c.optional)} & available
    domains = ["rgb", *sorted(wanted)]
    available |= predicted - on_disk
    if "point_info" in on_disk and any("scene" in c.requires for c in entries):
        from robust.scene_renderer import SynthSceneRenderer  # open3d: only when a corruption re-renders

        if SynthSceneRenderer.has_scenes(cfg.data_root, index.buildings):
            available.add("scene")  # robust.synth data: occlusion/scale re-render its scenes (batch["scene"])
    return TaskonomyDataset(cfg.data_root, domains, index=index), available


def _pending(ds: Dataset, keys: list, out: Path, plan: list[tuple[str, int]], resume: bool) -> list[int]:
    if not resume:
        return list(range(len(keys)))
    return [i for i, k in enumerate(keys) if any(not (out / c / str(s) / output_name(k)).exists() for c, s in plan)]


def _batches(ds: Dataset, indices: list[int], cfg: CorruptConfig) -> Iterator[dict]:
    subset = torch.utils.data.Subset(ds, indices)
    yield from DataLoader(subset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=_collate)


def corrupt_dataset(cfg: CorruptConfig) -> dict:
    """Run the corruption suite over a dataset; returns the manifest (also written to ``OUT/manifest.json``)."""
    if cfg.data_root is None:
        if cfg.dataset != "taskonomy":
            raise ValueError("--data-root is required for --dataset folder")
        from robust.synth import ensure_dataset

        cfg.data_root = str(ensure_dataset(SYNTH_ROOT))
        print(f"[robust.corrupt] using the embedded synthetic dataset at {cfg.data_root}")
    severities = parse_severities(cfg.severities)
    requested = select_corruptions(cfg.corruptions)
    ds, available = _make_dataset(cfg, requested)
    names, skipped = _plan(cfg, available)
    for name, why in skipped.items():
        print(f"[robust.corrupt] skipping {name}: {why}")
    if not names:
        raise DataError(f"{cfg.data_root}: none of the requested corruptions can run on this data")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    keys = list(ds.keys) if isinstance(ds, TaskonomyDataset) else [str(p.relative_to(ds.root)) for p in ds.files]
    plan = [(c, s) for c in names for s in severities]
    todo = _pending(ds, keys, out, plan, cfg.resume)
    t0, written = time.time(), 0
    add_depth = depth_predictor(cfg.depth_model, device) if cfg.depth_model else None
    writer = _Writer(cfg.workers)
    try:
        bar = progress(desc="corrupting", total=len(todo) * len(plan), unit="img")
        for batch in _batches(ds, todo, cfg):
            batch_keys = batch.pop("key")
            batch = {k: v.to(device) for k, v in batch.items()}
            if add_depth is not None and "depth_euclidean" not in batch:
                batch = add_depth(batch)
            if "scene" in available:
                from robust.scene_renderer import SynthSceneRenderer

                batch["scene"] = SynthSceneRenderer.from_dataset(cfg.data_root, batch_keys)
            batch = _derive(batch, names)
            for c in names:
                targets = {s: [out / c / str(s) / output_name(k) for k in batch_keys] for s in severities}
                todo = [s for s, paths in targets.items() if not (cfg.resume and all(p.exists() for p in paths))]
                bar.update(len(batch_keys) * (len(severities) - len(todo)))
                if not todo:
                    continue
                # All missing severities in one call: motion blur renders its camera path once for all of them.
                entry = corruptions3d.get_corruption(c)
                ys = entry.apply_severities(batch, todo, image_seeds(batch_keys, cfg.seed, c))
                arrays = (ys.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
                for j, s in enumerate(todo):
                    for path, a in zip(targets[s], arrays[:, j]):
                        writer.put(path, a)
                written += len(batch_keys) * len(todo)
                bar.update(len(batch_keys) * len(todo))
        bar.close()
    finally:
        writer.close()
    manifest = _manifest(cfg, names, skipped, severities, len(keys), written, time.time() - t0)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    if cfg.preview and keys:
        path = write_preview(out, names, severities, output_name(keys[0]), ds, device)
        print(f"[robust.corrupt] preview grid: {path}")
    return manifest


def _derive(batch: dict, names: list[str]) -> dict:
    """Add geometry the corruptions need but the data lacks: default intrinsics, lighting from depth."""
    needed = {d for n in names for d in corruptions3d.get_corruption(n).requires} - set(batch)
    if "intrinsics" in needed:
        b, _, h, w = batch["rgb"].shape
        batch = {**batch, "intrinsics": default_intrinsics(b, h, w, device=batch["rgb"].device)}
    derivable = {d for n in names for d in corruptions3d.get_corruption(n).derivable}
    if needed & derivable and "depth_euclidean" in batch:
        from corruptions3d.lighting import derive

        batch = derive(batch, sorted(needed & derivable))
    return batch


def _manifest(cfg, names, skipped, severities, n_images, written, seconds) -> dict:
    entries = {}
    for n in names:
        c = corruptions3d.get_corruption(n)
        entries[n] = {
            "family": c.family,
            "requires": list(c.requires),
            "severities": {k: to_jsonable(list(v)) for k, v in c.severities.items()},
            "stochastic": c.stochastic,
        }
    return {
        "config": to_jsonable(cfg),
        "corruptions": entries,
        "skipped": skipped,
        "severities": severities,
        "images": n_images,
        "written_this_run": written,
        "seconds_this_run": round(seconds, 2),
        "seed_rule": "seed(image, corruption) = splitmix64(seed, crc32(output name), crc32(corruption)); "
        "the same for every severity",
        "rounding": "float outputs are rounded to 8 bits (the 3DCC/ImageNet-C references truncate: ≤1 level apart)",
        "environment": environment(),
    }


def write_preview(out: Path, names: list[str], severities: list[int], rel: str, ds, device, cell: int = 128) -> Path:
    """Grid PNG: one row per corruption, clean image then one column per severity, labelled."""
    first = ds[0]
    clean = first["rgb"]
    label_w, pad = 150, 2
    cols = 1 + len(severities)
    sheet = Image.new("RGB", (label_w + cols * (cell + pad), (1 + len(names)) * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)

    def thumb(t: torch.Tensor) -> Image.Image:
        a = (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(a).resize((cell, cell), Image.BILINEAR)

    for j, s in enumerate(["clean", *[f"severity {s}" for s in severities]]):
        draw.text((label_w + j * (cell + pad) + 4, cell // 2), s, fill="black")
    for i, n in enumerate(names):
        y = (i + 1) * (cell + pad)
        draw.text((4, y + cell // 2), n, fill="black")
        sheet.paste(thumb(clean), (label_w, y))
        for j, s in enumerate(severities):
            path = out / n / str(s) / rel
            if path.exists():
                img = Image.open(path).convert("RGB").resize((cell, cell), Image.BILINEAR)
                sheet.paste(img, (label_w + (j + 1) * (cell + pad), y))
    path = out / "preview.png"
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(
        CorruptConfig,
        argv,
        epilog="Example: python -m robust.corrupt --dataset taskonomy --data-root data/synth --out outputs/c "
        "--corruptions fog_3d,near_focus --severities 1-5 --preview",
    )
    manifest = corrupt_dataset(cfg)
    print(
        f"[robust.corrupt] {manifest['written_this_run']} images written in {manifest['seconds_this_run']} s "
        f"to {cfg.out} ({len(manifest['corruptions'])} corruptions × {len(manifest['severities'])} severities)"
    )


if __name__ == "__main__":
    main()
