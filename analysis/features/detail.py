"""One feature's views that are computed when its page asks, from the weights or from one context, not stored:

    hist = logit_histogram(direction, model.W_U, final_norm_map(model))   # its effect on every vocabulary token
    ids, values, shares = neuron_alignment(sae.W_dec[feature])            # the hook dimensions it writes most
    acts = context_activations(model, hook, sae, token_ids)[1][:, feature] # its activation on a whole context

Why on request: the histogram is one [d_model] x [d_model, vocab] product per feature (milliseconds), while storing
it for every feature of every dictionary would need a table the schema does not have; the alignment reads one row
of W_dec; a whole context is one forward pass, and the store keeps only a window around each example.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from analysis.features.weights import DirectionMap

BINS = 60
"""Bins of the logit-effect histogram, evenly spaced from the smallest effect to the largest."""
TOP = 10
"""Tokens marked at each end of the histogram; dimensions listed by the alignment."""


@dataclass(frozen=True)
class LogitHistogram:
    """A feature's direct effect on the logit of every vocabulary token."""

    edges: np.ndarray
    """[bins + 1] bin edges, ascending."""
    counts: np.ndarray
    """[bins] tokens per bin (the last bin includes its right edge); they sum to the vocabulary size."""
    top_ids: np.ndarray
    """[top] the most promoted tokens, strongest first."""
    top_values: np.ndarray
    bottom_ids: np.ndarray
    """[top] the most suppressed tokens, most negative first."""
    bottom_values: np.ndarray


@torch.no_grad()
def logit_effects_of(direction: Tensor, W_U: Tensor, final_norm: DirectionMap | None = None) -> Tensor:
    """[vocab] effects of one residual-stream direction [d_model] through the final norm's linear part and W_U,
    as analysis.features.weights.logit_effects computes them for every feature."""
    direction = direction.to(W_U.device, torch.float32)[None]  # (1, d_model)
    if final_norm is not None:
        direction = final_norm(direction)
    return (direction @ W_U.float())[0]


def logit_histogram(direction: Tensor, W_U: Tensor, final_norm: DirectionMap | None = None, bins: int = BINS,
                    top: int = TOP) -> LogitHistogram:
    """The histogram of a residual direction's logit effects over the whole vocabulary, with its top tokens."""
    effects = logit_effects_of(direction, W_U, final_norm).cpu()
    top = min(top, len(effects))
    hi = torch.topk(effects, top)
    lo = torch.topk(effects, top, largest=False)
    values = effects.numpy().astype(np.float64)
    span = (values.min(), values.max()) if values.max() > values.min() else (values.min() - 0.5, values.max() + 0.5)
    counts, edges = np.histogram(values, bins=bins, range=span)
    return LogitHistogram(edges, counts, hi.indices.numpy(), hi.values.numpy(), lo.indices.numpy(),
                          lo.values.numpy())


@torch.no_grad()
def neuron_alignment(decoder_row: Tensor, n: int = TOP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n dimensions of the hook's space (MLP neurons, residual basis directions, head-major hook_z entries)
    with the largest |W_dec[feature, d]|: (dims, values, share of the row's L1 norm), largest first."""
    row = decoder_row.detach().float().cpu()
    n = min(n, len(row))
    dims = torch.topk(row.abs(), n).indices
    l1 = float(row.abs().sum()) or 1.0
    values = row[dims]
    return dims.numpy(), values.numpy(), (values.abs() / l1).numpy()


@torch.no_grad()
def context_activations(model, hook: str, sae, token_ids) -> tuple[Tensor, Tensor]:
    """One forward pass over a stored context (token ids [T]) to `hook`, read by `sae`:
    (activations at the hook [T, d_in] flattened per token, feature activations [T, d_sae]).

    The feature activations are the architecture's own (sae.dictionaries.feature_activations), as analyze reads
    them; positions analyze leaves out (the attention sink) are set to 0, so the values match its examples.
    """
    from analysis.features.analyze import SKIP_FIRST
    from analysis.features.inspector import encode_rows
    from sae.models import stop_layer

    tokens = torch.as_tensor(list(token_ids), dtype=torch.long, device=model.cfg.device)[None]  # (1, T)
    _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop_layer(model, hook))
    acts = cache[hook][0]
    acts = acts.reshape(acts.shape[0], -1).float()  # (T, d_in): hook_z heads flattened head-major
    feature_acts = encode_rows(sae, acts).cpu()  # (T, d_sae)
    feature_acts[:SKIP_FIRST] = 0
    return acts.cpu(), feature_acts


def dimension_correlations(feature_acts: np.ndarray, acts: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Pearson correlation over tokens of a feature's activations [N] with the hook activations acts [N, d_in] at
    each of `dims`; NaN where either side is constant."""
    f = feature_acts.astype(np.float64) - feature_acts.mean()
    x = acts[:, dims].astype(np.float64)
    x = x - x.mean(axis=0)
    denom = np.sqrt((f ** 2).sum() * (x ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (f @ x) / denom, np.nan)
