"""Run infrastructure shared by every CLI: dataclass configs as argparse, seeding, run folders,
progress bars and optional wandb (offline by default, never required)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from robust.io.atomic import atomic_write_text

C = TypeVar("C")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (CPU and CUDA); returns a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, **kw) -> tqdm:
    """A tqdm progress bar (disabled when ``ROBUST_NO_PROGRESS=1``, e.g. in tests)."""
    disable = os.environ.get("ROBUST_NO_PROGRESS", "") == "1"
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, **kw)


def _field_type(f: dataclasses.Field, hints: dict) -> Any:
    t = hints.get(f.name, f.type)
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if len(args) == 1 else str
    return t


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per dataclass field; help text from ``field(metadata={"help": ...})``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        t = _field_type(f, hints)
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        help_ = f.metadata.get("help", "") + (f" (default: {default})" if default not in (None, "") else "")
        kw: dict[str, Any] = {"dest": f.name, "help": help_, "default": default}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(t) in (list, tuple, Sequence):
            (inner,) = typing.get_args(t)[:1] or (str,)
            parser.add_argument(flag, nargs="+", type=inner, **kw)
        else:
            required = default is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            parser.add_argument(flag, type=t if t in (int, float, str) else str, required=required, **kw)


def _prog() -> str | None:
    """``python -m robust.synth`` rather than ``__main__.py`` in usage lines, when run with ``-m``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None and spec.name else None


def parse_config(cls: type[C], argv: Sequence[str] | None = None, description: str = "", epilog: str = "") -> C:
    """Parse command-line flags into dataclass ``cls``."""
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=description or (cls.__doc__ or "").strip(),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, cls)
    ns = parser.parse_args(argv)
    return cls(**vars(ns))


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic, torch.Tensor)):
        return obj.tolist()
    return obj


def environment() -> dict[str, str]:
    """Versions that decide results: python, torch, numpy, device."""
    import platform

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "none",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "argv": " ".join(sys.argv),
    }


class Run:
    """A run folder: ``config.json`` (resolved config + environment), ``metrics.jsonl``, optional wandb.

    wandb is used only with ``wandb=True``; it defaults to ``WANDB_MODE=offline`` and never needs an
    account. Tests set ``WANDB_MODE=disabled``.
    """

    def __init__(self, out_dir: str | os.PathLike, config: Any, wandb: bool = False, project: str = "robust"):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        atomic_write_text(
            self.dir / "config.json",
            json.dumps({"config": to_jsonable(config), "environment": environment()}, indent=2),
        )
        self._wandb = None
        if wandb:
            os.environ.setdefault("WANDB_MODE", "offline")
            import wandb as wb

            self._wandb = wb.init(project=project, dir=str(self.dir), config=to_jsonable(config))

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Append one JSON line (and log to wandb when enabled)."""
        row = {"time": time.time(), **({"step": step} if step is not None else {}), **to_jsonable(metrics)}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(to_jsonable(metrics), step=step)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
