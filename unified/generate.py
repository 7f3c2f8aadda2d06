"""Any-to-any generation: MaskGIT and random-order (ROAR) decoding for image/vector targets,
autoregressive decoding for sequences, classifier-free guidance (conditional and unconditional passes in
one batch), and chains where each output becomes an input of the next step.

Conditioning is ``{modality: (B, L) ids}`` (image ``L = grid²``; sequences padded with ``[PAD]=0``, no EOS).

``python -m unified.generate`` writes image-like predictions in Taskonomy format (VQ-VAE decoders +
``robust.io.write_view``, one atomic file per domain) and sequence predictions to ``OUT/sequences.jsonl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robust.io import atomic_write_text, write_view
from robust.runs import parse_config, progress
from unified.modalities import get_modality
from unified.model import UnifiedModel, model_config
from unified.sequences import EOS_ID, PAD_ID, SENTINEL_ID0, TextTokenizer
from unified.shards import parse_key, read_shards, shard_paths
from unified.vqvae import VQVAE

EXAMPLES = """examples:
  # rgb -> depth -> normal for every view of SHARDS (demo decoding: 1-step ROAR, temperature 0.01, CFG 2)
  python -m unified.generate --checkpoint RUN/checkpoint-00010000.pt --shards SHARDS --tokenizers TOK \\
      --cond rgb --targets depth normal --out PRED
  # greedy 8-step MaskGIT without guidance, first 100 views, then a caption
  python -m unified.generate --checkpoint RUN/checkpoint-00010000.pt --shards SHARDS --tokenizers TOK \\
      --cond rgb --targets depth caption --scheme maskgit --steps 8 --temperature 0 --cfg-scale 1 \\
      --limit 100 --out PRED

TOK holds <modality>.pt VQ-VAEs (unified.train_tokenizer --tokenizers TOK) and text.json; PRED is a
Taskonomy root readable by robust.io.TaskonomyDataset (images at 16 x grid pixels).
"""


@dataclass
class Step:
    """One link of a generation chain."""

    target: str
    scheme: str = "maskgit"
    """``maskgit`` | ``roar`` (image/vector targets) or ``ar`` (sequences; chosen automatically)."""
    steps: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    """Classifier-free guidance: ``l_uncond + s (l_cond - l_uncond)``; 1 = no guidance."""
    max_len: int = 0
    """Sequence length limit (0: the modality's ``max_tokens``)."""
    vocab: int = 0
    """Sample only ids ``< vocab`` (a tokenizer codebook smaller than the modality's vocabulary; 0: all)."""


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest and the smallest set with cumulative probability ``>= top_p``."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, step: Step, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Sample ``(..., V)`` logits; returns (ids, probability of each sampled id). Temperature 0 = argmax."""
    if step.temperature <= 0:
        probs = logits.softmax(-1)
        ids = probs.argmax(-1)
    else:
        probs = filter_logits(logits / step.temperature, step.top_k, step.top_p).softmax(-1)
        flat = probs.reshape(-1, probs.shape[-1])
        ids = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    return ids, probs.gather(-1, ids[..., None])[..., 0]


class Generator:
    """Decoding schemes over a trained :class:`UnifiedModel`."""

    def __init__(self, model: UnifiedModel, seed: int = 0):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.rng = torch.Generator(self.device).manual_seed(seed)

    def _cond_slots(self, cond: dict[str, torch.Tensor], uncond: bool) -> list[tuple[torch.Tensor, ...]]:
        """Encoder slots (ids, pos, mod, valid) of fully visible conditioning (sequences get EOS appended);
        ``uncond`` marks them all invalid (the unconditional pass of guidance)."""
        parts = []
        for name, ids in cond.items():
            m = self.model.modalities[self.model.modality_index(name)]
            b, n = ids.shape
            pos = torch.arange(n + m.is_sequence, device=self.device).expand(b, -1)
            if m.is_sequence:
                length = (ids != PAD_ID).sum(1, keepdim=True)
                ids = torch.cat([ids, ids.new_zeros(b, 1)], 1).scatter(1, length, EOS_ID)
                valid = pos <= length
            else:
                valid = torch.ones_like(ids, dtype=torch.bool)
            parts.append((ids, pos, torch.full_like(ids, self.model.modality_index(name)), valid & (not uncond)))
        return parts

    def _logits(
        self, cond: dict[str, torch.Tensor], extra_enc: tuple, dec: dict[str, torch.Tensor], step: Step
    ) -> torch.Tensor:
        """Target-vocabulary logits ``(B,T,V_m)``, guided when ``cfg_scale != 1`` (one doubled batch)."""
        guided = step.cfg_scale != 1.0
        enc = _cat_slots([*self._cond_slots(cond, False), extra_enc])
        if guided:
            unc = _cat_slots([*self._cond_slots(cond, True), extra_enc])
            enc = {k: torch.cat([enc[k], unc[k]]) for k in enc}
            dec = {k: torch.cat([v, v]) for k, v in dec.items()}
        i = self.model.modality_index(step.target)
        off, vocab = int(self.model.mod_offset[i]), step.vocab or self.model.modalities[i].vocab_size
        logits = self.model.logits({**enc, **dec})[..., off : off + vocab].float()
        if guided:
            c, u = logits.chunk(2)
            logits = u + step.cfg_scale * (c - u)
        return logits

    @torch.no_grad()
    def parallel(self, cond: dict[str, torch.Tensor], step: Step, batch: int) -> torch.Tensor:
        """MaskGIT (cosine schedule, keep the most confident samples) or ROAR (random order, linear
        schedule) decoding of an image/vector target; returns ``(B, N)`` ids."""
        i = self.model.modality_index(step.target)
        n = self.model.modalities[i].max_tokens
        pos = torch.arange(n, device=self.device).expand(batch, -1)
        mod = torch.full_like(pos, i)
        tokens = torch.zeros_like(pos)
        known = torch.zeros_like(pos, dtype=torch.bool)
        order = torch.rand(batch, n, generator=self.rng, device=self.device).argsort(1)
        rank = order.argsort(1)
        for k in range(step.steps):
            if step.scheme == "maskgit":
                remaining = math.floor(n * math.cos(math.pi / 2 * (k + 1) / step.steps))
            elif step.scheme == "roar":
                remaining = n - round(n * (k + 1) / step.steps)
            else:
                raise ValueError(f"unknown parallel decoding scheme {step.scheme!r} (maskgit | roar)")
            select = n - int(known[0].sum()) - remaining
            query = ~known if step.scheme == "maskgit" else (~known & (rank < n - remaining))
            dec = {"dec_ids": tokens * 0, "dec_pos": pos, "dec_mod": mod, "dec_valid": query}
            logits = self._logits(cond, (tokens, pos, mod, known), dec, step)
            ids, prob = sample_tokens(logits, step, self.rng)
            conf = prob.masked_fill(~query, -1.0)
            chosen = torch.zeros_like(known).scatter(1, conf.topk(select, 1).indices, True) & query
            tokens = torch.where(chosen, ids, tokens)
            known |= chosen
        return tokens

    @torch.no_grad()
    def autoregressive(self, cond: dict[str, torch.Tensor], step: Step, batch: int) -> torch.Tensor:
        """Autoregressive decoding of a whole sequence target (input ``[S_0]``, stop at ``[S_1]``);
        returns ``(B, max_len)`` ids padded with ``[PAD]`` (EOS and sentinels removed)."""
        i = self.model.modality_index(step.target)
        max_len = step.max_len or self.model.modalities[i].max_tokens
        t_len = max_len + 2
        pos = torch.arange(t_len, device=self.device).expand(batch, -1)
        seq = torch.zeros(batch, t_len + 1, dtype=torch.long, device=self.device)
        seq[:, 0] = SENTINEL_ID0
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        empty = (seq[:, :0], seq[:, :0], seq[:, :0], done[:, None][:, :0])
        for t in range(t_len):
            dec = {"dec_ids": seq[:, :t_len], "dec_pos": pos, "dec_mod": torch.full_like(pos, i), "dec_valid": pos <= t}
            ids, _ = sample_tokens(self._logits(cond, empty, dec, step)[:, t], step, self.rng)
            seq[:, t + 1] = torch.where(done, PAD_ID, ids)
            done |= ids == SENTINEL_ID0 + 1
            if bool(done.all()):
                break
        body = seq[:, 1 : max_len + 1]
        stop = (body == EOS_ID) | (body == SENTINEL_ID0 + 1) | (body == PAD_ID)
        keep = stop.long().cumsum(1) == 0
        return torch.where(keep, body, PAD_ID)

    def chain(self, cond: dict[str, torch.Tensor], steps: list[Step]) -> dict[str, torch.Tensor]:
        """Run ``steps`` in order, adding each output to the conditioning; returns the outputs."""
        batch = next(iter(cond.values())).shape[0]
        cond, out = dict(cond), {}
        for step in steps:
            m = self.model.modalities[self.model.modality_index(step.target)]
            gen = self.autoregressive if m.is_sequence else self.parallel
            out[step.target] = cond[step.target] = gen(cond, step, batch)
        return out


def _cat_slots(parts: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    keys = [f"enc_{k}" for k in ("ids", "pos", "mod", "valid")]
    return {k: torch.cat([p[j] for p in parts], 1) for j, k in enumerate(keys)}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> UnifiedModel:
    """A :class:`UnifiedModel` from a ``unified.train`` checkpoint."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--checkpoint {path}: file not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    c = ckpt["config"]
    model = UnifiedModel(model_config(c["size"], modalities=tuple(c["modalities"]), grid=c["grid"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


@dataclass
class GenerateConfig:
    """Chained any-to-any generation from token shards; writes Taskonomy-format predictions."""

    checkpoint: str = field(default=None, metadata={"help": "unified.train checkpoint"})
    shards: str = field(default=None, metadata={"help": "token shards holding the conditioning modalities"})
    out: str = field(default=None, metadata={"help": "output Taskonomy root"})
    tokenizers: str = field(default="", metadata={"help": "folder with <modality>.pt VQ-VAEs and text.json"})
    cond: list[str] = field(default_factory=lambda: ["rgb"])
    targets: list[str] = field(default_factory=lambda: ["depth"])
    scheme: str = field(default="roar", metadata={"choices": ["maskgit", "roar"]})
    steps: int = 1
    temperature: float = 0.01
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 2.0
    batch_size: int = 16
    limit: int = 0
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def load_decoders(cfg: GenerateConfig, model: UnifiedModel) -> tuple[dict[str, VQVAE], TextTokenizer | None]:
    """Check ``--cond``/``--targets`` against the model; load the targets' VQ-VAEs and the text tokenizer."""
    names = [m.name for m in model.modalities]
    for flag in ("cond", "targets"):
        for name in getattr(cfg, flag):
            try:
                m = get_modality(name)
            except KeyError as e:
                raise KeyError(f"--{flag}: {e.args[0]}") from None
            if name not in names:
                raise ValueError(f"--{flag} {name}: the model was not trained on it ({', '.join(names)})")
            if flag == "targets" and m.kind == "vector":
                raise ValueError(f"--targets {name}: vector modalities have no Taskonomy file to write")
    tok = Path(cfg.tokenizers)
    vq = {}
    for t in cfg.targets:
        m = model.modalities[names.index(t)]
        if m.kind != "image":
            continue
        path = tok / f"{t}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--tokenizers {path}: no VQ-VAE for {t!r} (see unified.train_tokenizer)")
        vq[t] = VQVAE.load(path, cfg.device)
        if vq[t].config.modality != t or vq[t].config.vocab_size > m.vocab_size:
            raise ValueError(
                f"--tokenizers {path}: a {vq[t].config.modality!r} VQ-VAE with {vq[t].config.vocab_size} codes "
                f"cannot decode {t!r} tokens (vocabulary {m.vocab_size})"
            )
    text = TextTokenizer.load(tok / "text.json") if any(get_modality(t).is_sequence for t in cfg.targets) else None
    return vq, text


def generate_dataset(cfg: GenerateConfig) -> Path:
    """Generate ``targets`` for every view of ``shards`` (demo defaults: 1-step ROAR, temp 0.01, CFG 2)."""
    for name in ("checkpoint", "shards", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required")
    model = load_model(cfg.checkpoint, cfg.device)
    vq, text = load_decoders(cfg, model)
    gen = Generator(model, cfg.seed)
    samples = read_shards(shard_paths(cfg.shards), cfg.cond)[: cfg.limit or None]
    for c in cfg.cond:
        m = model.modalities[model.modality_index(c)]
        n = len(samples[0][1][c]) if samples else m.max_tokens
        if not m.is_sequence and n != m.max_tokens:
            raise ValueError(f"--shards {cfg.shards}: {c} has {n} tokens per view but the model needs {m.max_tokens}")
    steps = [
        Step(t, cfg.scheme, cfg.steps, cfg.temperature, cfg.top_k, cfg.top_p, cfg.cfg_scale, vocab=_vocab(vq, t))
        for t in cfg.targets
    ]
    g = model.config.grid
    lines = []
    for start in progress(range(0, len(samples), cfg.batch_size), desc="generate"):
        chunk = samples[start : start + cfg.batch_size]
        cond = {c: _stack([s[c] for _, s in chunk]).to(cfg.device) for c in cfg.cond}
        out = gen.chain(cond, steps)
        images = {vq[t].modality.domain: vq[t].decode(out[t].view(-1, g, g)).cpu() for t in vq}
        for j, (key, _) in enumerate(chunk):
            if images:
                write_view(cfg.out, parse_key(key), {d: x[j] for d, x in images.items()})
            texts = {t: text.decode(out[t][j].tolist()) for t in out if t not in vq}
            if texts:
                lines.append(json.dumps({"key": key, **texts}))
    if lines:
        atomic_write_text(Path(cfg.out) / "sequences.jsonl", "\n".join(lines) + "\n")
    return Path(cfg.out)


def _vocab(vq: dict[str, VQVAE], target: str) -> int:
    return vq[target].config.vocab_size if target in vq else 0


def _stack(arrays: list) -> torch.Tensor:
    n = max(len(a) for a in arrays)
    out = torch.zeros(len(arrays), n, dtype=torch.long)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(a)
    return out


def main(argv: list[str] | None = None) -> None:
    generate_dataset(parse_config(GenerateConfig, argv, epilog=EXAMPLES))


if __name__ == "__main__":
    main()
