"""Any-to-any generation: MaskGIT and random-order (ROAR) decoding for image/vector targets,
autoregressive decoding for sequences, classifier-free guidance (conditional and unconditional passes in
one batch), and chains where each output becomes an input of the next step.

Conditioning is ``{modality: (B, L) ids}`` (image ``L = grid²``; sequences padded with ``[PAD]=0``, no EOS).

``python -m unified.generate --checkpoint RUN/checkpoint-N.pt --shards SHARDS --tokenizers TOK --cond rgb
--targets depth normal caption --out DIR`` writes image-like predictions in Taskonomy format (VQ-VAE
decoders + ``robust.io.write_view``) and sequence predictions to ``DIR/sequences.jsonl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robust.io import atomic_write_text, write_view
from robust.runs import parse_config, progress
from unified.model import UnifiedModel, model_config
from unified.sequences import EOS_ID, PAD_ID, SENTINEL_ID0, TextTokenizer
from unified.shards import parse_key, read_shards, shard_paths
from unified.vqvae import VQVAE


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
        off, vocab = int(self.model.mod_offset[i]), self.model.modalities[i].vocab_size
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


def generate_dataset(cfg: GenerateConfig) -> Path:
    """Generate ``targets`` for every view of ``shards`` (demo defaults: 1-step ROAR, temp 0.01, CFG 2)."""
    for name in ("checkpoint", "shards", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required")
    model = load_model(cfg.checkpoint, cfg.device)
    gen = Generator(model, cfg.seed)
    mods = {m.name: m for m in model.modalities}
    tok = Path(cfg.tokenizers)
    vq = {t: VQVAE.load(tok / f"{t}.pt", cfg.device) for t in cfg.targets if mods[t].kind == "image"}
    text = TextTokenizer.load(tok / "text.json") if any(mods[t].is_sequence for t in cfg.targets) else None
    samples = read_shards(shard_paths(cfg.shards), cfg.cond)[: cfg.limit or None]
    steps = [Step(t, cfg.scheme, cfg.steps, cfg.temperature, cfg.top_k, cfg.top_p, cfg.cfg_scale) for t in cfg.targets]
    lines = []
    for start in progress(range(0, len(samples), cfg.batch_size), desc="generate"):
        chunk = samples[start : start + cfg.batch_size]
        cond = {c: _stack([s[c] for _, s in chunk]).to(cfg.device) for c in cfg.cond}
        out = gen.chain(cond, steps)
        images = {}
        for t, ids in out.items():
            if t in vq:
                g = model.config.grid
                images[mods[t].domain] = vq[t].decode(ids.view(-1, g, g)).cpu()
        for j, (key, _) in enumerate(chunk):
            view = parse_key(key)
            if images:
                write_view(cfg.out, view, {d: x[j] for d, x in images.items()})
            texts = {t: text.decode(out[t][j].tolist()) for t in out if mods[t].is_sequence}
            if texts:
                lines.append(json.dumps({"key": key, **texts}))
    if lines:
        atomic_write_text(Path(cfg.out) / "sequences.jsonl", "\n".join(lines) + "\n")
    return Path(cfg.out)


def _stack(arrays: list) -> torch.Tensor:
    n = max(len(a) for a in arrays)
    out = torch.zeros(len(arrays), n, dtype=torch.long)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(a)
    return out


def main(argv: list[str] | None = None) -> None:
    generate_dataset(parse_config(GenerateConfig, argv))


if __name__ == "__main__":
    main()
