"""Dictionaries spliced into the model with TransformerLens hooks: x -> decode(f) + eps at each site, where
f = encode(x) and eps = x - decode(f) is the reconstruction error, kept as its own node so the output is unchanged.

Three ways to splice, one per pass of the attribution:
    node pass     f and eps are leaves; the site passes x on unchanged and the gradient straight through, so one
                  backward gives dm/df and dm/deps at every site (the unmodified model's gradient)
    edge pass     each site is cut: downstream of it the model reads decode(f) + eps from leaves, while f and
                  eps themselves are computed (differentiably) from the site's input, so a backward from a
                  downstream node stops at the previous site's leaves (the upstream error held constant)
    ablation      features and errors outside a keep mask are replaced by their baseline (mean or zero)
Every dictionary goes through its own `encode`/`decode` (the registry's SAELens classes): TopK, MP, codebook
alike. Activations are flattened per token (hook_z: heads x d_head, head-major) as every dictionary takes them.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass
class Site:
    """One dictionary spliced at its hook."""

    name: str
    """The dictionary's name in the workspace."""
    hook: str
    layer: int
    """The hook's block (-1 before block 0): sites are ordered by it, upstream first."""
    sae: Any
    """The loaded dictionary (any registered architecture)."""

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def encode(self, x: Float[Tensor, "pos d_in"]) -> Float[Tensor, "pos d_sae"]:
        return self.sae.encode(x)

    def decode(self, f: Float[Tensor, "pos d_sae"]) -> Float[Tensor, "pos d_in"]:
        # a codebook decodes with the LayerNorm statistics of the rows it last encoded: callers decode right
        # after encoding the same rows
        return self.sae.decode(f)


@dataclass
class Baseline:
    """What a node is replaced by when it is ablated (and what attribution measures a node against)."""

    kind: str
    """"mean" or "zero"."""
    features: list[Tensor]
    """Per site, [d_sae] feature activations (zero, or the corpus mean)."""
    errors: list[Tensor]
    """Per site, [d_in] error vector (zero, or the corpus mean)."""
    source: str = ""
    """Where a mean came from, in words."""
    corpus: str | None = None
    """The corpus a mean was taken over (None: zero, or contexts given without a name)."""
    contexts: int = 0
    """How many of its first contexts the mean took."""


@dataclass
class SiteState:
    """What a pass leaves behind at one site (batch 1: position-major tensors)."""

    f: Tensor | None = None
    """[pos, d_sae] feature activations (a leaf in the node pass; computed from x in the edge pass)."""
    eps: Tensor | None = None
    """[pos, d_in] reconstruction error (likewise)."""
    f_leaf: Tensor | None = None
    """Edge pass: the leaf copy of f that the downstream model reads."""
    eps_leaf: Tensor | None = None
    extra: dict = field(default_factory=dict)


def _flat(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """[1, pos, ...] -> [pos, d_in] (hook_z heads flattened head-major), and the shape to restore."""
    return x.reshape(x.shape[1], -1), tuple(x.shape)


def _node_hook(site: Site, state: SiteState):
    def hook(x: Tensor, hook) -> Tensor:
        flat, shape = _flat(x)
        with torch.no_grad():
            f = site.encode(flat.detach())
            eps = flat.detach() - site.decode(f)
        state.f = f.detach().requires_grad_(True)
        state.eps = eps.detach().requires_grad_(True)
        rec = site.decode(state.f) + state.eps
        # x unchanged, bit for bit; the gradient reaches f and eps through rec and passes on to x unchanged
        return (flat + (rec - rec.detach())).reshape(shape)
    return hook


def _edge_hook(site: Site, state: SiteState):
    def hook(x: Tensor, hook) -> Tensor:
        flat, shape = _flat(x)
        state.f = site.encode(flat)
        state.eps = flat - site.decode(state.f)
        state.f_leaf = state.f.detach().requires_grad_(True)
        state.eps_leaf = state.eps.detach().requires_grad_(True)
        return (site.decode(state.f_leaf) + state.eps_leaf).reshape(shape)
    return hook


def _freeze_hooks(model, freeze_final_norm: bool) -> list[tuple[str, Callable]]:
    """ln_final's scale as a constant of the backward pass (circuit-tracer freezes norm scales): the metric is then
    linear in the last block's residual stream."""
    if not freeze_final_norm or "ln_final.hook_scale" not in model.hook_dict:
        return []
    return [("ln_final.hook_scale", lambda scale, hook: scale.detach())]


def metric_of(logits: Float[Tensor, "1 pos vocab"], target: int, contrast: int | None) -> Tensor:
    """logit(target) at the last position, minus logit(contrast) when there is one."""
    last = logits[0, -1]
    return last[target] - last[contrast] if contrast is not None else last[target]


@contextmanager
def _hooked(model, hooks: list[tuple[str, Callable]]) -> Iterator[None]:
    with model.hooks(fwd_hooks=hooks):
        yield


@torch.enable_grad()  # the gradients are the point: a caller's no_grad (or a library's) must not turn them off
def run_node_pass(model, tokens: Tensor, sites: list[Site], target: int, contrast: int | None,
                  freeze_final_norm: bool = False) -> tuple[Tensor, list[SiteState]]:
    """(metric, per-site states with .f/.eps and their .grad) from one forward and one backward."""
    states = [SiteState() for _ in sites]
    hooks = [(s.hook, _node_hook(s, st)) for s, st in zip(sites, states)]
    with _hooked(model, hooks + _freeze_hooks(model, freeze_final_norm)):
        metric = metric_of(model(tokens), target, contrast)
    leaves = [t for st in states for t in (st.f, st.eps)]
    # the gradient of the leaves only: no parameter's .grad is touched
    grads = torch.autograd.grad(metric, leaves, allow_unused=True)
    for leaf, grad in zip(leaves, grads):
        leaf.grad = grad
    return metric.detach(), states


@torch.enable_grad()
def run_edge_pass(model, tokens: Tensor, sites: list[Site]) -> list[SiteState]:
    """States of a forward in which every site is cut (see the module docstring); the graph is kept for repeated
    backward passes. Runs only as far as the last site."""
    states = [SiteState() for _ in sites]
    hooks = [(s.hook, _edge_hook(s, st)) for s, st in zip(sites, states)]
    last = max(s.layer for s in sites)
    with _hooked(model, hooks):
        model(tokens, stop_at_layer=last + 1 if last >= 0 else 0)
    return states


@torch.no_grad()
def run_ablated(model, tokens: Tensor, sites: list[Site], keep: list[tuple[Tensor, Tensor]], baseline: Baseline,
                target: int, contrast: int | None) -> float:
    """The metric with, at every site, the features and errors outside `keep` (per site: [pos, d_sae] and [pos]
    masks) replaced by the baseline. Downstream sites encode what the ablated upstream gives them."""
    gates = [(kf.float()[None], ke.float()[None]) for kf, ke in keep]
    return float(run_gated(model, tokens, sites, gates, baseline, target, contrast)[0])


def _gated_hook(site: Site, gates_f: Float[Tensor, "b pos d_sae"], gates_e: Float[Tensor, "b pos"],
                base_f: Tensor, base_eps: Tensor):
    """Every node interpolated between its baseline (gate 0) and its value (gate 1); one gate set per batch row."""
    def hook(x: Tensor, hook) -> Tensor:
        flat = x.reshape(x.shape[0] * x.shape[1], -1)
        f = site.encode(flat)
        eps = flat - site.decode(f)
        f = base_f + gates_f.reshape(flat.shape[0], -1) * (f - base_f)
        eps = base_eps + gates_e.reshape(-1, 1) * (eps - base_eps)
        return (site.decode(f) + eps).reshape(x.shape)
    return hook


def run_gated(model, tokens: Tensor, sites: list[Site], gates: list[tuple[Tensor, Tensor]], baseline: Baseline,
              target: int, contrast: int | None) -> Tensor:
    """[b] metrics of the prompt `tokens` [1, pos] run b times, batch row i with, per site, its features and errors
    set to baseline + gate x (value - baseline) (gates: per site, [b, pos, d_sae] and [b, pos]). Gates of 0 and 1
    are the ablation pass's masks; the metrics are differentiable in the gates when they require grad."""
    b = gates[0][0].shape[0]
    hooks = [(s.hook, _gated_hook(s, gf, ge, bf, be))
             for s, (gf, ge), bf, be in zip(sites, gates, baseline.features, baseline.errors)]
    with _hooked(model, hooks):
        logits = model(tokens.expand(b, -1))
    last = logits[:, -1]
    return last[:, target] - last[:, contrast] if contrast is not None else last[:, target]


@torch.no_grad()
def corpus_means(model, tokens: Tensor, sites: list[Site], batch: int = 8) -> tuple[list[Tensor], list[Tensor]]:
    """Per site, the mean feature activations [d_sae] and mean error [d_in] over corpus contexts `tokens`
    [n, ctx], position 0 left out (as the feature statistics leave it out)."""
    sums_f = [torch.zeros(s.d_sae, device=tokens.device) for s in sites]
    sums_e: list[Tensor | float] = [0.0 for _ in sites]
    count = 0

    def collect(i: int, site: Site):
        def hook(x: Tensor, hook) -> None:
            flat = x[:, 1:].reshape(-1, x[0, 0].numel())
            f = site.encode(flat)
            sums_f[i] += f.sum(0)
            sums_e[i] = sums_e[i] + (flat - site.decode(f)).sum(0)
        return hook

    hooks = [(s.hook, collect(i, s)) for i, s in enumerate(sites)]
    last = max(s.layer for s in sites)
    with _hooked(model, hooks):
        for lo in range(0, tokens.shape[0], batch):
            chunk = tokens[lo:lo + batch]
            model(chunk, stop_at_layer=last + 1 if last >= 0 else 0)
            count += chunk.shape[0] * (chunk.shape[1] - 1)
    return [s / count for s in sums_f], [s / count for s in sums_e]
