"""Head scores as sums over attention patterns: the vectorised maths of one batch, no model involved.

Every score is a mean over destination tokens of a quantity read off the pattern A[dest, src] of one head.
The scan (analysis/heads/scan.py) adds up the per-batch sums returned here and divides by the counts at the end,
so no pattern is ever kept. Destination 0 is left out of every score: it can only attend to itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

SCORES: dict[str, str] = {
    "prev_token": "mean attention from each token to the token just before it",
    "induction": "attention to the token after an earlier occurrence of the current token (corpus)",
    "induction_random": "attention from the 2nd copy of a repeated random sequence to the token after "
                        "the current token's 1st copy (i -> i-T+1)",
    "duplicate": "attention to earlier occurrences of the current token",
    "first_token": "mean attention to the first token of the context (BOS where the model uses one)",
    "self": "mean attention from each token to itself",
    "entropy": "mean entropy (nats) of each destination's attention distribution",
    "distance": "mean distance dest - src, weighted by attention",
}
"""Score name -> one-line definition (CLI help, UI tooltips, the export's documentation)."""

PATTERN_SCORES = ("prev_token", "self", "first_token", "entropy", "distance")
"""Scores averaged over every destination 1..p-1."""
MATCH_SCORES = ("duplicate", "induction")
"""Scores averaged over the destinations that have a match (an earlier duplicate, an induction source)."""


LINEAR = ("prev_token", "self", "first_token", "distance", "duplicate", "induction")
"""Scores whose per-destination quantity is a weighted sum of the pattern row: sum_src A[dest, src] W[dest, src].
They are computed together as one batched matmul of the flattened pattern with a (dest*src, score) weight
matrix, so the pattern is read once for all of them (entropy and peaks need their own pass)."""


@dataclass(frozen=True)
class MatchMasks:
    """Which sources count for each linear score in one batch (shared by every layer)."""

    weights: Float[Tensor, "batch dest_src score"]
    """W of every score in LINEAR, flattened over (dest, src); rows of dest 0 are zero."""
    n_duplicate: int
    """Destinations (>= 1) with at least one earlier duplicate."""
    n_induction: int
    """Destinations (>= 1) with at least one induction source."""

    def mask(self, score: str) -> Float[Tensor, "batch dest src"]:
        pos = int(round(self.weights.shape[1] ** 0.5))
        return self.weights[..., LINEAR.index(score)].reshape(-1, pos, pos)


def positional_weights(pos: int, device=None) -> Float[Tensor, "dest src 4"]:
    """W of prev_token (src = dest - 1), self (src = dest), first_token (src = 0), distance (dest - src)."""
    dest = torch.arange(pos, device=device)[:, None]
    src = torch.arange(pos, device=device)[None, :]
    valid = (dest >= 1) & (src <= dest)
    parts = [src == dest - 1, (src == dest) & valid, (src == 0) & valid, (dest - src) * valid]
    return torch.stack([part.float() for part in parts], dim=-1)


def match_masks(tokens: Int[Tensor, "batch pos"], fixed: Tensor | None = None) -> MatchMasks:
    """Weights of every linear score for a batch; duplicate and induction follow TransformerLens' head detector.

    fixed: positional_weights(pos), passed in to build it once per scan.
    """
    batch, pos = tokens.shape
    same: Bool[Tensor, "batch dest src"] = tokens[:, :, None] == tokens[:, None, :]
    strictly_before = torch.ones(pos, pos, dtype=torch.bool, device=tokens.device).tril(-1)
    duplicate = same & strictly_before
    # Source s is an induction source of d when the token before s equals tokens[d]: shift `duplicate` right
    # by one column, so the column for s reads the match of s - 1 (the first column has no predecessor).
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]
    fixed = positional_weights(pos, tokens.device) if fixed is None else fixed
    weights = torch.cat([fixed.expand(batch, -1, -1, -1), duplicate[..., None].float(),
                         induction[..., None].float()], dim=-1)  # (batch, dest, src, score)
    return MatchMasks(weights=weights.reshape(batch, pos * pos, len(LINEAR)),
                      n_duplicate=int(duplicate.any(-1).sum()), n_induction=int(induction.any(-1).sum()))


def pattern_sums(pattern: Float[Tensor, "batch head dest src"],
                 masks: MatchMasks) -> dict[str, Float[Tensor, " head"]]:
    """Per-head sums over the batch and destinations 1..p-1 of every score's per-destination quantity."""
    batch, heads, pos, _ = pattern.shape
    linear = torch.bmm(pattern.reshape(batch, heads, pos * pos), masks.weights).sum(0)  # (head, score)
    sums = {name: linear[:, i] for i, name in enumerate(LINEAR)}
    a = pattern[:, :, 1:]  # (batch, head, dest 1..p-1, src)
    sums["entropy"] = -torch.special.xlogy(a, a).sum((0, 2, 3))
    return sums


def pattern_counts(batch: int, pos: int, masks: MatchMasks) -> dict[str, int]:
    """How many destinations each of `pattern_sums`' sums adds up."""
    counts = {name: batch * (pos - 1) for name in PATTERN_SCORES}
    counts["duplicate"] = masks.n_duplicate
    counts["induction"] = masks.n_induction
    return counts


def repeated_random_tokens(n_seqs: int, half: int, vocab: Int[Tensor, " v"], bos: int | None,
                           generator: torch.Generator) -> Int[Tensor, "n_seqs pos"]:
    """`n_seqs` sequences of `half` random tokens drawn from `vocab`, each repeated twice (BOS first if given)."""
    picks = torch.randint(0, len(vocab), (n_seqs, half), generator=generator)
    seq = vocab[picks]
    body = torch.cat([seq, seq], dim=1)  # (n_seqs, 2 * half)
    if bos is None:
        return body
    return torch.cat([torch.full((n_seqs, 1), bos, dtype=body.dtype), body], dim=1)


def induction_random_sum(pattern: Float[Tensor, "batch head dest src"], half: int,
                         offset: int) -> Float[Tensor, " head"]:
    """Sum over sequences and second-half positions of A[i, i - T + 1] (T = `half`, shifted by `offset`).

    Position i (relative to `offset`, the BOS slot) in the second copy holds the same token as i - T; an
    induction head attends to the token that followed it, i - T + 1. Averaging over the batch * T
    destinations gives TransformerLens' induction score on repeated random tokens.
    """
    dest = torch.arange(half, 2 * half, device=pattern.device) + offset
    src = dest - half + 1
    return pattern[:, :, dest, src].sum((0, 2))


def context_peaks(pattern: Float[Tensor, "batch head dest src"]
                  ) -> tuple[Float[Tensor, "batch head"], Float[Tensor, "batch head dest1"],
                             Int[Tensor, "batch head dest1"]]:
    """How concentrated each head is away from the first token, per context.

    For destination d >= 1 the peak is the largest weight on any source 1..d (the first token excluded, as
    it is the usual attention sink). A context's score is the mean peak over its destinations: high when
    the head keeps a sharp focus on real tokens (previous-token, induction, duplicate heads), low for heads
    that rest on the first token. Returns (score, peak weight, peak source) with destinations 1..p-1.
    """
    weight, src = pattern[:, :, 1:, 1:].max(dim=-1)  # (batch, head, dest 1..p-1)
    return weight.mean(-1), weight, src + 1
