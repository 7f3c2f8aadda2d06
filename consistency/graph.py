"""The task graph: frozen cross-task networks as edges ``(src, dst)`` and predictions along paths.

An edge is any module mapping a batch dict ``{src: (B,C,H,W)}`` to ``{dst: (B,C',H,W), ...}`` (every
:class:`robust.models.DomainModel` does). A path is a sequence of domains, e.g.
``("rgb", "depth_zbuffer", "normal")`` for ``rgb→depth→normal``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

EDGE_SEP = "->"


def edge_key(src: str, dst: str) -> str:
    return f"{src}{EDGE_SEP}{dst}"


def parse_edge(key: str) -> tuple[str, str]:
    """``"normal->depth_zbuffer"`` → ``("normal", "depth_zbuffer")``; raises on anything else."""
    parts = key.split(EDGE_SEP)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"edge {key!r} must look like 'src{EDGE_SEP}dst', e.g. 'normal{EDGE_SEP}depth_zbuffer'")
    return parts[0], parts[1]


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with gradients off for its parameters (activations still backprop)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class TaskGraph(nn.Module):
    """Frozen edges between domains; :meth:`run` chains them along a path.

    Args:
        edges: ``{(src, dst): module}``; every module is frozen.
    """

    def __init__(self, edges: Mapping[tuple[str, str], nn.Module]) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({edge_key(s, d): freeze(m) for (s, d), m in edges.items()})

    def train(self, mode: bool = True) -> TaskGraph:
        """Edges stay in eval mode: they are fixed functions, not trained."""
        return super().train(False)

    def edge(self, src: str, dst: str) -> nn.Module:
        key = edge_key(src, dst)
        if key not in self.edges:
            raise KeyError(f"task graph has no edge {key!r}; edges: {sorted(self.edges)}")
        return self.edges[key]

    def transfer(self, src: str, dst: str, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` in domain ``src`` to domain ``dst`` through the edge network."""
        return self.edge(src, dst)({src: x})[dst]

    def run(self, path: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        """Follow ``path`` (≥2 domains) from ``x`` in domain ``path[0]``."""
        if len(path) < 2:
            raise ValueError(f"a path needs at least two domains, got {list(path)}")
        for src, dst in itertools.pairwise(path):
            x = self.transfer(src, dst, x)
        return x
