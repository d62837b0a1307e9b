"""Head scores over a corpus: one forward pass per batch with hooks on every `blocks.L.attn.hook_pattern`.

The hooks add per-head sums into fixed-size accumulators (analysis/heads/scores.py has the maths) and keep
a running top-N of contexts per head, so memory never grows with the corpus. `hook_z` is summed on the same
pass to give each head's mean output, which mean-ablation reuses. A second, small pass over repeated random
token sequences measures the standard induction score.

Grouped-query attention: hook_pattern already has one pattern per query head, so every score is per query
head; head h reads keys and values of KV group h // (n_heads // n_kv_heads) (TransformerLens'
repeat_interleave layout).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from analysis.heads.scores import (
    SCORES,
    context_peaks,
    induction_random_sum,
    match_masks,
    pattern_counts,
    pattern_sums,
    positional_weights,
    repeated_random_tokens,
)
from store.errors import InputError
from store.faults import crash_point


@dataclass(frozen=True)
class HeadScanConfig:
    tokens: int = 65_536
    """Corpus tokens to scan (rounded up to whole contexts, capped by the corpus)."""
    batch: int = 8
    """Contexts per forward pass."""
    n_examples: int = 5
    """Top-attending contexts kept per head (see heads_scores.context_peaks for the ranking)."""
    random_seqs: int = 16
    """Repeated random sequences for the induction test."""
    random_half: int = 64
    """Length T of each random sequence before it repeats (capped so 2T tokens fit the context)."""
    seed: int = 0
    """Seed of the random sequences."""
    mean_contexts: int = 64
    """Contexts (the first ones) whose hook_z is averaged for mean-ablation; plenty for a mean of d_head values,
    and the hook_z hooks come off after them."""

    def __post_init__(self):
        for name in ("tokens", "batch", "n_examples", "random_seqs", "random_half", "mean_contexts"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive (got {getattr(self, name)})")


@dataclass
class HeadScan:
    """Everything one scan measured; arrays are indexed [layer, head, ...]."""

    model: str
    n_heads: int
    n_kv_heads: int
    n_tokens: int
    scores: dict[str, np.ndarray]
    """Score name -> [n_layers, n_heads] mean."""
    counts: dict[str, int]
    """Score name -> destination tokens the mean is over."""
    context_ids: list[int]
    """Corpus context ids that were scanned, in order."""
    top_score: np.ndarray
    """[n_layers, n_heads, n_examples] context score (mean peak non-first weight), best first."""
    top_context: np.ndarray
    """[n_layers, n_heads, n_examples] context id (-1 where fewer contexts were scanned)."""
    top_weight: np.ndarray
    """[n_layers, n_heads, n_examples, pos - 1] peak non-first weight per destination 1..pos-1."""
    top_src: np.ndarray
    """[n_layers, n_heads, n_examples, pos - 1] source position of that peak."""
    mean_z: np.ndarray
    """[n_layers, n_heads, d_head] mean of hook_z over the first config.mean_contexts contexts' tokens."""
    config: HeadScanConfig = field(default_factory=HeadScanConfig)


def n_kv_heads(model) -> int:
    return model.cfg.n_key_value_heads or model.cfg.n_heads


def kv_group(model, head: int) -> int:
    """KV group (index of the key/value head) that query head `head` reads."""
    return head // (model.cfg.n_heads // n_kv_heads(model))


class _Accumulator:
    """Running sums, the running top-N contexts per head and the hook_z sums of a scan."""

    def __init__(self, model, pos: int, n_examples: int):
        n_layers, n_heads, d_head = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
        self.sums = {name: torch.zeros(n_layers, n_heads, dtype=torch.float64) for name in SCORES}
        self.counts = dict.fromkeys(SCORES, 0)
        self.z_sum = torch.zeros(n_layers, n_heads, d_head, dtype=torch.float64)
        self.z_tokens = 0
        self.top_score = torch.full((n_layers, n_heads, n_examples), -1.0)
        self.top_context = torch.full((n_layers, n_heads, n_examples), -1, dtype=torch.long)
        self.top_weight = torch.zeros(n_layers, n_heads, n_examples, pos - 1)
        self.top_src = torch.zeros(n_layers, n_heads, n_examples, pos - 1, dtype=torch.long)
        self.masks = None
        self.batch_ids: Tensor | None = None

    def on_pattern(self, pattern: Float[Tensor, "batch head dest src"], hook, layer: int):
        for name, value in pattern_sums(pattern, self.masks).items():
            self.sums[name][layer] += value.double().cpu()
        self._merge_top(layer, *context_peaks(pattern))

    def on_z(self, z: Float[Tensor, "batch pos head d_head"], hook, layer: int):
        self.z_sum[layer] += z.sum((0, 1)).double().cpu()

    def on_random(self, pattern: Float[Tensor, "batch head dest src"], hook, layer: int, half: int,
                  offset: int):
        self.sums["induction_random"][layer] += induction_random_sum(pattern, half, offset).double().cpu()

    def _merge_top(self, layer: int, score: Tensor, weight: Tensor, src: Tensor):
        # Candidates = the current top-N plus every context of this batch; keep the N best per head.
        n = self.top_score.shape[-1]
        batch_ids = self.batch_ids.expand(score.shape[1], -1)  # (head, batch)
        all_score = torch.cat([self.top_score[layer], score.T.cpu()], dim=1)  # (head, n + batch)
        best = all_score.topk(n, dim=1).indices  # (head, n)
        pick = best[..., None].expand(-1, -1, weight.shape[-1])
        self.top_score[layer] = all_score.gather(1, best)
        self.top_context[layer] = torch.cat([self.top_context[layer], batch_ids], 1).gather(1, best)
        self.top_weight[layer] = torch.cat([self.top_weight[layer], weight.transpose(0, 1).cpu()], 1).gather(1, pick)
        self.top_src[layer] = torch.cat([self.top_src[layer], src.transpose(0, 1).cpu()], 1).gather(1, pick)


def _corpus_pass(model, tokens: Int[Tensor, "n pos"], context_ids: list[int], acc: _Accumulator,
                 config: HeadScanConfig, progress: bool) -> None:
    n_layers, batch = model.cfg.n_layers, config.batch
    hooks = [(f"blocks.{layer}.attn.hook_pattern", partial(acc.on_pattern, layer=layer)) for layer in range(n_layers)]
    z_hooks = [(f"blocks.{layer}.attn.hook_z", partial(acc.on_z, layer=layer)) for layer in range(n_layers)]
    ids = torch.tensor(context_ids, dtype=torch.long)
    fixed = positional_weights(tokens.shape[1], model.cfg.device)
    bar = tqdm(total=tokens.numel(), unit="tok", unit_scale=True, desc="head scores", disable=not progress)
    with torch.inference_mode():
        for lo in range(0, len(tokens), batch):
            chunk = tokens[lo:lo + batch].to(model.cfg.device)
            acc.masks, acc.batch_ids = match_masks(chunk, fixed), ids[lo:lo + batch]
            with_z = lo < config.mean_contexts
            acc.z_tokens += chunk.numel() if with_z else 0
            with model.hooks(fwd_hooks=hooks + (z_hooks if with_z else [])):
                # Scores need patterns only: stop before ln_final and the unembedding (49k-token vocabulary).
                model(chunk, stop_at_layer=n_layers)
            crash_point("heads.batch")
            for name, count in pattern_counts(len(chunk), chunk.shape[1], acc.masks).items():
                acc.counts[name] += count
            bar.update(chunk.numel())
    bar.close()


def random_vocab(model) -> Int[Tensor, " v"]:
    """Token ids a random sequence may use: the whole vocabulary except special tokens."""
    special = set(model.tokenizer.all_special_ids) if model.tokenizer is not None else set()
    return torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special], dtype=torch.long)


def _random_pass(model, acc: _Accumulator, config: HeadScanConfig) -> None:
    bos = model.tokenizer.bos_token_id if model.cfg.default_prepend_bos and model.tokenizer else None
    offset = int(bos is not None)
    half = min(config.random_half, (model.cfg.n_ctx - offset) // 2)
    generator = torch.Generator().manual_seed(config.seed)
    seqs = repeated_random_tokens(config.random_seqs, half, random_vocab(model), bos, generator)
    hooks = [(f"blocks.{layer}.attn.hook_pattern", partial(acc.on_random, layer=layer, half=half, offset=offset))
             for layer in range(model.cfg.n_layers)]
    with model.hooks(fwd_hooks=hooks), torch.inference_mode():
        for lo in range(0, len(seqs), config.batch):
            model(seqs[lo:lo + config.batch].to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
    acc.counts["induction_random"] = len(seqs) * half


def scan_heads(model, tokens: Int[Tensor, "n_contexts pos"], context_ids: list[int],
               config: HeadScanConfig = HeadScanConfig(), progress: bool = True) -> HeadScan:
    """Score every head on `tokens` (corpus contexts with ids `context_ids`) and on repeated random tokens."""
    if tokens.ndim != 2 or len(tokens) == 0 or tokens.shape[1] < 2:
        raise InputError("head scores need at least one context of at least 2 tokens")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise InputError(f"contexts of {tokens.shape[1]} tokens exceed the model's context ({model.cfg.n_ctx})")
    acc = _Accumulator(model, tokens.shape[1], config.n_examples)
    _corpus_pass(model, tokens, context_ids, acc, config, progress)
    _random_pass(model, acc, config)
    scores = {name: (acc.sums[name] / max(acc.counts[name], 1)).numpy() for name in SCORES}
    return HeadScan(model=model.cfg.model_name, n_heads=model.cfg.n_heads, n_kv_heads=n_kv_heads(model),
                    n_tokens=tokens.numel(), scores=scores, counts=dict(acc.counts),
                    context_ids=list(context_ids), top_score=acc.top_score.numpy(),
                    top_context=acc.top_context.numpy(), top_weight=acc.top_weight.numpy(),
                    top_src=acc.top_src.numpy(),
                    mean_z=(acc.z_sum / max(acc.z_tokens, 1)).float().numpy(), config=config)
