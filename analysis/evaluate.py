"""Evaluate a dictionary on held-out data: reconstruction on activations, and what splicing it does to the model.

Every metric is computed here from its definition; in particular FVU is the ratio of sums
sum||x - x_hat||^2 / sum||x - mean||^2 over the held-out rows, not a per-row average (SAEBench's "explained
variance" is not a variance, so it is not reused), and CE recovered = (CE_zero - CE_dict) / (CE_zero - CE_clean).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import Tensor

DENSE = 0.1
"""A feature firing on more than this fraction of tokens counts as dense."""
HIST_BINS = 16
CLEAN_MEMO_BYTES = 1 << 30
"""Clean log-probabilities are kept for the KL of later dictionaries up to this size, else recomputed."""


def _histogram(values: Tensor, bins: int = HIST_BINS) -> tuple[list[float], list[float]]:
    """Integer-aligned bins from 0 to max+1: (edges, fraction of values per bin)."""
    top = int(values.max()) + 1 if values.numel() else 1
    width = max(1, math.ceil(top / bins))
    edges = list(range(0, top + width, width))
    counts = torch.histc(values.float(), bins=len(edges) - 1, min=0, max=edges[-1])
    return [float(e) for e in edges], (counts / max(1, values.numel())).tolist()


def _encode(sae, pursuit: bool, x: Tensor, steps: list[Tensor], reasons: list[Tensor]) -> Tensor:
    """Feature activations; with pursuit steps (MP) also collects the steps that added an atom and stop reasons."""
    if not pursuit:
        return sae.encode(x)
    from sae.dictionaries import mp_encode_steps

    found = mp_encode_steps(sae, x)
    steps.append((found.atom_ids >= 0).sum(-1).cpu())
    reasons.append(found.stop_reason.cpu())
    return found.feature_acts


@torch.no_grad()
def activation_metrics(sae, rows: Tensor, batch: int = 4096) -> dict[str, float]:
    """L0, FVU, cosine, norm ratio, dead and dense fractions of `sae` on raw activation rows [n, d_in]."""
    from sae.dictionaries import arch_of

    arch, device = arch_of(sae), next(sae.parameters()).device
    n, d = rows.shape
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_sq = sse = cos = ratio = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    l0s, steps, reasons = [], [], []
    for x in rows.split(batch):
        x = x.to(device)
        acts = _encode(sae, arch.has_pursuit_steps, x, steps, reasons)
        x_hat = sae.decode(acts).float()
        active = acts != 0
        l0s.append(active.sum(-1).cpu())
        fired += active.sum(0).double().cpu()
        sse += float(((x - x_hat) ** 2).double().sum())
        sum_x += x.double().sum(0).cpu()
        sum_sq += float((x.double() ** 2).sum())
        cos += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).double().sum())
        ratio += float((x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).double().sum())
    l0 = torch.cat(l0s)
    total_var = sum_sq - float((sum_x ** 2).sum()) / n  # sum ||x - mean||^2
    metrics = {"eval_tokens": float(n), "fvu": sse / total_var if total_var > 0 else float("nan"),
               "mse": sse / (n * d), "l0": float(l0.float().mean()), "l0_p50": float(l0.float().median()),
               "l0_max": float(l0.max()), "cos": cos / n, "norm_ratio": ratio / n,
               "dead": float((fired == 0).double().mean()), "dense": float((fired / n > DENSE).double().mean())}
    metrics |= _hist_metrics("l0", l0)
    if arch.has_codes:
        metrics |= _code_metrics(fired)
    if steps:
        metrics |= _mp_metrics(torch.cat(steps), torch.cat(reasons))
    return metrics


def _hist_metrics(name: str, values: Tensor) -> dict[str, float]:
    from store.dictionaries import histogram_metrics

    edges, fractions = _histogram(values)
    return histogram_metrics(name, edges, fractions)


def _code_metrics(fired: Tensor) -> dict[str, float]:
    """Share of codes used on the eval tokens and perplexity of the code distribution (exp of its entropy)."""
    if fired.sum() == 0:
        return {"code_usage": 0.0}
    p = fired / fired.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"code_usage": float((fired > 0).double().mean()), "code_perplexity": math.exp(entropy)}


def _mp_metrics(steps: Tensor, reasons: Tensor) -> dict[str, float]:
    """Pursuit steps that added an atom (mean, histogram) and the share of inputs per stop reason."""
    from sae.dictionaries import STOP_REASONS

    out = {"mp_steps": float(steps.float().mean())} | _hist_metrics("mp_steps", steps)
    for index, reason in enumerate(STOP_REASONS):
        out[f"mp_stop_{reason}"] = float((reasons == index).double().mean())
    return out


# ---------------------------------------------------------------------------------------------- on the model

def _splice(act: Tensor, sae, start: int) -> Tensor:
    """act with positions >= start replaced by the reconstruction (sae) or by zeros (sae None).

    Position 0 (the attention sink, never trained on) keeps its clean value.
    """
    out = act.clone()
    if sae is None:
        out[:, start:] = 0
        return out
    heads = act.shape[2:] if act.ndim == 4 else None  # hook_z: [b, p, h, dh] -> [b, p, h*dh] head-major
    flat = act[:, start:].reshape(act.shape[0], act.shape[1] - start, -1)
    recon = sae.decode(sae.encode(flat.float())).to(act.dtype)
    out[:, start:] = recon.reshape(*recon.shape[:2], *heads) if heads is not None else recon
    return out


def _resume_layer(hook: str) -> int | None:
    """Layer to restart the forward pass from when `hook` is a residual stream (None: run the whole model)."""
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
    if match is None:
        return None
    return int(match.group(1)) + (1 if match.group(2) == "post" else 0)


class ModelEval:
    """CE loss clean / spliced / zero-ablated and KL to clean logits on fixed contexts at one hook.

    Clean and zero-ablated runs do not depend on the dictionary: they are computed once and reused for
    every dictionary evaluated at the same hook. At a residual-stream hook the clean activations are kept
    and spliced runs restart from the next layer (start_at_layer), skipping the layers below the hook.
    """

    def __init__(self, model, hook: str, tokens: Tensor, batch: int = 8, splice_from: int = 1):
        from sae.models import check_hook

        check_hook(model, hook)
        self.model, self.hook, self.batch, self.start = model, hook, batch, splice_from
        self.tokens = tokens.to(next(model.parameters()).device)
        self.resume_at = _resume_layer(hook)
        self._acts: list[Tensor] = []
        self._clean: list[Tensor] | None = None
        self.ce_clean = self._clean_run()
        self.ce_zero = self._spliced_run(None)[0]

    def _batches(self):
        return enumerate(self.tokens.split(self.batch))

    @staticmethod
    def _logprobs(logits: Tensor) -> Tensor:
        return torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predictions of tokens 1..ctx-1

    @torch.no_grad()
    def _clean_run(self) -> float:
        keep = self.tokens.numel() * self.model.cfg.d_vocab * 4 <= CLEAN_MEMO_BYTES
        total, memo = 0.0, []
        for _, ids in self._batches():
            if self.resume_at is not None:
                logits, cache = self.model.run_with_cache(ids, names_filter=self.hook)
                self._acts.append(cache[self.hook])
            else:
                logits = self.model(ids)
            logp = self._logprobs(logits)
            total += float(-logp.gather(-1, ids[:, 1:, None]).sum())
            if keep:
                memo.append(logp)
        self._clean = memo if keep else None
        return total / self.tokens[:, 1:].numel()

    def _spliced_logits(self, index: int, ids: Tensor, sae) -> Tensor:
        if self.resume_at is not None:
            spliced = _splice(self._acts[index], sae, self.start)
            return self.model(spliced, start_at_layer=self.resume_at, tokens=ids)
        hook = [(self.hook, lambda act, hook: _splice(act, sae, self.start))]
        return self.model.run_with_hooks(ids, fwd_hooks=hook, return_type="logits")

    @torch.no_grad()
    def _spliced_run(self, sae) -> tuple[float, float]:
        """(CE, KL to clean) per predicted token with the hook spliced (zeros when sae is None)."""
        total = kl = 0.0
        for index, ids in self._batches():
            logp = self._logprobs(self._spliced_logits(index, ids, sae))
            total += float(-logp.gather(-1, ids[:, 1:, None]).sum())
            if sae is not None:
                clean = self._clean[index] if self._clean is not None else self._logprobs(self.model(ids))
                kl += float((clean.exp() * (clean - logp)).sum())
        count = self.tokens[:, 1:].numel()
        return total / count, kl / count

    def evaluate(self, sae) -> dict[str, float]:
        """ce_clean, ce_sae, ce_zero, ce_recovered, delta_ce and kl (mean per predicted token)."""
        ce_sae, kl = self._spliced_run(sae)
        gap = self.ce_zero - self.ce_clean
        return {"ce_clean": self.ce_clean, "ce_sae": ce_sae, "ce_zero": self.ce_zero,
                "ce_recovered": (self.ce_zero - ce_sae) / gap if abs(gap) > 1e-9 else float("nan"),
                "delta_ce": ce_sae - self.ce_clean, "kl": kl,
                "eval_contexts": float(self.tokens.shape[0])}


def evaluate_dictionary(folder: Path, source, eval_tokens: torch.Tensor | None, model_name: str, hook: str,
                        lm=None, evals: dict | None = None, device: str | None = None) -> dict[str, float]:
    """Metrics of a saved dictionary on the source's held-out rows and, given contexts, on the model.

    `evals` caches the clean / zero-ablated model runs per (model, hook) across dictionaries. Everything runs on
    one device: the model's when one is given (or cached in `evals`), else `device` (None: the best there is).
    """
    from sae.device import pick_device
    from sae.dictionaries import load_dictionary
    from sae.models import load_model

    evals = {} if evals is None else evals
    evaluator = evals.get((model_name, hook))
    model = evaluator.model if evaluator is not None else lm if lm is not None and lm.cfg.model_name == model_name \
        else None
    on = next(model.parameters()).device if model is not None else pick_device(device)
    sae = load_dictionary(folder, device=on)
    metrics = activation_metrics(sae, source.held_out_rows())
    if eval_tokens is None or not model_name or not hook:
        return metrics
    if evaluator is None:
        model = model if model is not None else load_model(model_name, device=on)
        evaluator = evals[(model_name, hook)] = ModelEval(model, hook, eval_tokens)
    return metrics | evaluator.evaluate(sae)
