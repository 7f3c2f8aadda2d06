"""The modality registry: one entry per modality (tokenizer, vocabulary, token budget, embedding, decoding).

Three kinds, as in 4M (``fourm/data/modality_info.py``):

- ``image``: a VQ-VAE token grid (patch 16); embedded with 2D sin-cos positions, decoded MAE-style
  (mask token + position + modality embedding as queries), detokenized by the VQ-VAE decoder into a
  ``robust.tasks`` domain.
- ``sequence``: WordPiece ids (captions, boxes, metadata share one text vocabulary); 1D sin-cos positions
  over the cumulative count of valid tokens, T5 span masking, autoregressive decoding.
- ``vector``: a global feature vector quantised per dimension into fixed bins; 1D positions, decoded
  like an image (all tokens at once).

Adding a modality is one :func:`register_modality` call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("image", "sequence", "vector")
TEXT_VOCAB = 8192
"""Shared WordPiece vocabulary size (specials, 200 sentinels, 4x1000 value tokens, words)."""


@dataclass(frozen=True)
class Modality:
    """One modality of the unified model.

    Attributes:
        name: registry key (``rgb``, ``depth``, ``caption`` ...).
        kind: ``image`` | ``sequence`` | ``vector``.
        tokenizer: ``vqvae`` | ``wordpiece`` | ``boxes`` | ``metadata`` | ``bins``.
        vocab_size: number of token ids.
        max_tokens: token count for image (grid side² at 224 px, patch 16) and vector; maximum
            length for sequences (without the appended EOS).
        domain: the ``robust.tasks`` domain an image modality reads and writes.
        channels: VQ-VAE input/output channels (classes for labels).
        coding: how canonical values map to the VQ-VAE's [-1, 1] input: ``unit`` ([0,1]), ``signed``
            ([-1,1]), ``log_depth`` (metres, log1p-scaled up to 128 m) or ``labels`` (one-hot classes, CE loss).
        vocab_group: modalities with the same group share token embeddings (the text vocabulary).
        value_range: (low, high) of a ``vector`` modality, quantised into ``vocab_size`` bins.
    """

    name: str
    kind: str
    tokenizer: str
    vocab_size: int
    max_tokens: int
    domain: str | None = None
    channels: int = 0
    coding: str = "unit"
    vocab_group: str = ""
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "image" and (self.domain is None or self.channels <= 0):
            raise ValueError(f"image modality {self.name!r} needs a robust.tasks domain and channels > 0")

    @property
    def group(self) -> str:
        """Vocabulary group (its own name unless shared)."""
        return self.vocab_group or self.name

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"

    def with_grid(self, grid: int) -> Modality:
        """Copy with a ``grid``×``grid`` token grid (image modalities; others unchanged)."""
        return dataclasses.replace(self, max_tokens=grid * grid) if self.kind == "image" else self


_REGISTRY: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """Add a modality to the registry; names are unique."""
    if modality.name in _REGISTRY:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _REGISTRY[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    """Look a modality up; raises ``KeyError`` listing the known ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown modality {name!r}; known modalities: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def list_modalities(kind: str | None = None) -> list[str]:
    return [n for n, m in _REGISTRY.items() if kind is None or m.kind == kind]


def resolve(names: tuple[str, ...] | list[str], grid: int = 14) -> list[Modality]:
    """Registry entries for ``names`` with image grids set to ``grid``×``grid`` tokens."""
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate modality names in {list(names)}")
    return [get_modality(n).with_grid(grid) for n in names]


def _image(name: str, domain: str, channels: int, coding: str, vocab: int = 1024) -> Modality:
    return Modality(name, "image", "vqvae", vocab, 196, domain=domain, channels=channels, coding=coding)


for _m in (
    _image("rgb", "rgb", 3, "unit"),
    _image("depth", "depth_euclidean", 1, "log_depth"),
    _image("normal", "normal", 3, "signed"),
    _image("reshading", "reshading", 1, "unit"),
    _image("edges", "edge_texture", 1, "unit"),
    _image("segment_semantic", "segment_semantic", 32, "labels"),
    Modality("caption", "sequence", "wordpiece", TEXT_VOCAB, 64, vocab_group="text"),
    Modality("det", "sequence", "boxes", TEXT_VOCAB, 128, vocab_group="text"),
    Modality("metadata", "sequence", "metadata", TEXT_VOCAB, 32, vocab_group="text"),
    Modality("global_feature", "vector", "bins", 256, 16),
):
    register_modality(_m)
