"""Sequence and vector tokenizers: WordPiece text, boxes and metadata as value tokens, binned vectors.

The text vocabulary follows 4M-21 (``train_wordpiece_tokenizer.py``): ``[PAD]=0 [UNK]=1 [SOS]=2 [EOS]=3``,
200 sentinels ``[S_0]..[S_199]`` (ids 4..203) for span masking, then 4x1000 value tokens ``v0=0 .. v3=999``
(ids 204..4203), then lower-cased WordPiece words. Boxes become ``v0=x0 v1=y0 v2=x1 v3=y1 <class>``
(Pix2Seq order, 1000 bins, sorted by distance of the top-left corner to the origin); metadata becomes
``v1=<key index> v0=<bin>`` pairs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from robust.io import DataError
from robust.tasks import INVALID_DEPTH

PAD, UNK, SOS, EOS = "[PAD]", "[UNK]", "[SOS]", "[EOS]"
PAD_ID, EOS_ID, SENTINEL_ID0 = 0, 3, 4
NUM_SENTINELS = 200
BINS = 1000
VALUE_AXES = 4
METADATA_KEYS: tuple[tuple[str, float, float], ...] = (
    ("brightness", 0.0, 1.0),
    ("contrast", 0.0, 0.5),
    ("saturation", 0.0, 1.0),
    ("mean_depth", 0.0, 20.0),
    ("depth_range", 0.0, 20.0),
    ("valid_fraction", 0.0, 1.0),
    ("objects", 0.0, 999.0),
    ("classes", 0.0, 999.0),
)
"""Metadata keys: (name, low, high); values are quantised into 1000 bins over [low, high]."""
_VALUE_RE = re.compile(r"v(\d)=(\d+)$")


def special_tokens() -> list[str]:
    return [
        PAD,
        UNK,
        SOS,
        EOS,
        *(f"[S_{k}]" for k in range(NUM_SENTINELS)),
        *(f"v{a}={b}" for a in range(VALUE_AXES) for b in range(BINS)),
    ]


def quantize(x: torch.Tensor, low: float, high: float, bins: int = BINS) -> torch.Tensor:
    """Values → bin ids in ``[0, bins)``, uniform over [low, high] (error <= (high-low)/(2(bins-1)))."""
    return ((x.float().clamp(low, high) - low) / (high - low) * (bins - 1)).round().long()


def dequantize(ids: torch.Tensor, low: float, high: float, bins: int = BINS) -> torch.Tensor:
    return ids.float() / (bins - 1) * (high - low) + low


class TextTokenizer:
    """WordPiece tokenizer shared by every sequence modality (caption, det, metadata)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.eos_id = tokenizer.token_to_id(PAD), tokenizer.token_to_id(EOS)
        self.sentinel_ids = [tokenizer.token_to_id(f"[S_{k}]") for k in range(NUM_SENTINELS)]
        if (self.pad_id, self.eos_id, self.sentinel_ids[0]) != (PAD_ID, EOS_ID, SENTINEL_ID0):
            raise ValueError("text tokenizer lacks the unified special tokens ([PAD]=0, [S_0]=4)")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, words: Sequence[str] = ()) -> TextTokenizer:
        """Train WordPiece on ``texts``; ``words`` (e.g. class names) are added to the corpus."""
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special_tokens())
        tok.train_from_iterator([*texts, *words], trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: text tokenizer file not found")
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def is_sentinel(self, i: int) -> bool:
        return self.sentinel_ids[0] <= i <= self.sentinel_ids[-1]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids → text; ``[PAD]`` dropped, value tokens and sentinels kept."""
        return self.tokenizer.decode([int(i) for i in ids if int(i) != self.pad_id], skip_special_tokens=False)

    def encode_boxes(self, boxes: Sequence[tuple[float, float, float, float, str]]) -> list[int]:
        """Boxes ``(x0, y0, x1, y1, class)`` in [0, 1] image fractions → ids."""
        parts = []
        for *xyxy, name in sorted(boxes, key=lambda b: b[0] ** 2 + b[1] ** 2):
            bins = quantize(torch.tensor(xyxy), 0.0, 1.0).tolist()
            parts.append(" ".join(f"v{a}={b}" for a, b in enumerate(bins)) + f" {name}")
        return self.encode(" ".join(parts))

    def decode_boxes(self, ids: Sequence[int]) -> list[tuple[float, float, float, float, str]]:
        """Inverse of :func:`encode_boxes` (coordinates at bin centres; incomplete boxes dropped)."""
        boxes, coords, words = [], {}, []
        for word in [*self.decode(ids).split(), "v0=0"]:
            m = _VALUE_RE.match(word)
            if not m:
                words.append(word)
                continue
            if m.group(1) == "0" and coords:
                if len(coords) == VALUE_AXES and words:
                    xyxy = dequantize(torch.tensor([coords[a] for a in range(VALUE_AXES)]), 0.0, 1.0).tolist()
                    boxes.append((*xyxy, " ".join(words)))
                coords, words = {}, []
            coords[int(m.group(1))] = int(m.group(2))
        return boxes

    def encode_metadata(self, values: dict[str, float]) -> list[int]:
        """``{key: value}`` over :data:`METADATA_KEYS` → ``v1=<key> v0=<bin>`` ids."""
        names = [k for k, *_ in METADATA_KEYS]
        unknown = set(values) - set(names)
        if unknown:
            raise KeyError(f"unknown metadata keys {sorted(unknown)}; known: {names}")
        parts = []
        for i, (name, lo, hi) in enumerate(METADATA_KEYS):
            if name in values:
                parts.append(f"v1={i} v0={int(quantize(torch.tensor(values[name]), lo, hi))}")
        return self.encode(" ".join(parts))

    def decode_metadata(self, ids: Sequence[int]) -> dict[str, float]:
        out, key = {}, None
        for word in self.decode(ids).split():
            m = _VALUE_RE.match(word)
            if m and m.group(1) == "1" and int(m.group(2)) < len(METADATA_KEYS):
                key = int(m.group(2))
            elif m and m.group(1) == "0" and key is not None:
                name, lo, hi = METADATA_KEYS[key]
                out[name] = float(dequantize(torch.tensor(int(m.group(2))), lo, hi))
                key = None
        return out


def image_metadata(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-view statistics ``{key: (B,)}`` from canonical ``rgb`` (B,3,H,W) and ``depth_euclidean`` (B,1,H,W) m."""
    out: dict[str, torch.Tensor] = {}
    if "rgb" in batch:
        rgb = batch["rgb"].float()
        gray = rgb.mean(1)
        out["brightness"] = gray.mean((1, 2))
        out["contrast"] = gray.flatten(1).std(1)
        out["saturation"] = (rgb.amax(1) - rgb.amin(1)).mean((1, 2))
    if "depth_euclidean" in batch:
        d = batch["depth_euclidean"].float().flatten(1)
        valid = d < INVALID_DEPTH - 1e-3
        n = valid.sum(1).clamp_min(1)
        out["mean_depth"] = torch.where(valid, d, 0).sum(1) / n
        big, small = torch.where(valid, d, 0).amax(1), torch.where(valid, d, INVALID_DEPTH).amin(1)
        out["depth_range"] = (big - small).clamp_min(0)
        out["valid_fraction"] = valid.float().mean(1)
    return out


def caption_from_objects(classes: Sequence[str]) -> str:
    """A template caption for a scene's object classes: ``"a room with 2 chairs and a table"``."""
    if not classes:
        return "an empty room"
    counts = Counter(classes)
    parts = [f"{n} {c}s" if n > 1 else f"a {c}" for c, n in sorted(counts.items())]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"a room with {listed}"


def load_annotations(path: str | Path) -> dict[str, dict]:
    """Per-view annotations: JSON ``{"building/point/view": {"caption": str, "boxes": [[x0,y0,x1,y1,cls]]}}``.

    Boxes are image fractions in [0, 1]; a view with boxes and no caption gets a template caption.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable annotations JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: annotations must be an object keyed by 'building/point/view'")
    for key, ann in data.items():
        for box in ann.get("boxes", []):
            if len(box) != 5 or not all(0.0 <= float(v) <= 1.0 for v in box[:4]):
                raise DataError(f"{path}: view {key!r}: box {box} is not [x0, y0, x1, y1, class] in [0, 1]")
        if "caption" not in ann and "boxes" in ann:
            ann["caption"] = caption_from_objects([b[4] for b in ann["boxes"]])
    return data


def scene_annotations(root: str | Path) -> dict[str, dict]:
    """Captions from ``<root>/<building>/scene.json`` files (``{"objects": [{"class": str}, ...]}``).

    Returns ``{building: {"caption": str, "objects": n, "classes": k}}``.
    """
    out = {}
    for path in sorted(Path(root).glob("**/scene.json")):
        try:
            scene = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable scene JSON ({e})") from e
        classes = [str(o.get("class", o.get("label", "object"))) for o in scene.get("objects", [])]
        building = str(path.parent.relative_to(root)).replace(".", "")
        n, k = len(classes), len(set(classes))
        out[building] = {"caption": caption_from_objects(classes), "objects": n, "classes": k}
    return out
