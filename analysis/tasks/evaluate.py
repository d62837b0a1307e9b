"""One evaluation of a site on a task: the supervised dictionary and (optionally) a learned one, side by side.

Prompts are drawn twice: `fit` prompts (seed + 1) give the mean activation, the supervised dictionary's mean codes
and the learned dictionary's F1 rankings; `eval` prompts (seed) give every reported figure. A dictionary's task
features are its `edit_features` best features by F1 for each value of each attribute.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from analysis.tasks import codes as dict_codes
from analysis.tasks import metrics as m
from analysis.tasks.ioi import ATTRIBUTES, build_ioi
from analysis.tasks.site import SitePatcher, cf_last_acts, check_site, last_acts
from analysis.tasks.supervised import SupervisedDictionary
from store.errors import InputError

EDIT_ATTRIBUTE = "io"
"""The attribute the control evaluation changes (the counterfactual prompt has another IO name)."""
STEPS, LEARNED_STEPS = 9, 7
"""Model runs (and encodings) of an evaluation of the supervised dictionary, and what a learned one adds: what
the progress bar counts."""
RANK_DEPTH = 32
"""Features per value ranked by F1 for edits, which take the first `edit_features` of them that fire."""


def evaluate_site(model, hook: str, sae=None, name: str | None = None, *, prompts: int = 200,
                  fit_prompts: int = 1000, seed: int = 0, edit_features: int = 2, progress: bool = False,
                  **task_options) -> dict:
    """Evaluate the supervised dictionary and `sae` (None: the supervised one alone) at the last token of `hook`.

    task_options go to build_ioi (names, templates, prefix). InputError for a site the task cannot use, a
    dictionary whose width is not the site's, or counts that are not positive.
    """
    check_counts(prompts, fit_prompts, edit_features)
    d_in = check_site(model, hook)
    if sae is not None and sae.cfg.d_in != d_in:
        raise InputError(f"dictionary {name!r} takes {sae.cfg.d_in} inputs, but {hook} has {d_in} per token")
    fit_weight = max(1, round(fit_prompts / prompts))  # the fit pass runs that many times the prompts
    bar = tqdm(total=STEPS - 1 + fit_weight + (LEARNED_STEPS if sae is not None else 0), desc=f"ioi at {hook}",
               unit="run", disable=not progress)

    def step(value, weight: int = 1):
        bar.update(weight)
        return value

    fit, task = build_ioi(model, fit_prompts, seed + 1, **task_options), build_ioi(model, prompts, seed,
                                                                                     **task_options)
    fit_acts, acts = step(last_acts(model, fit, hook), fit_weight), step(last_acts(model, task, hook))
    cf_acts = step(cf_last_acts(model, task, hook))
    attrs = {a: task.attribute(a) for a in ATTRIBUTES}
    n_values = {a: task.n_values(a) for a in ATTRIBUTES}

    patcher = SitePatcher(model, task, hook)

    def ld(patch=None) -> tuple[float, torch.Tensor]:
        logits = patcher.logits(patch)
        step(None)
        return float(m.logit_diff(logits, task.io_tokens, task.s_tokens).mean()), logits

    (ld_clean, clean), (ld_mean, _) = ld(), ld(fit_acts.mean(0).expand_as(acts))
    ld_cf_patch, cf_patched = ld(cf_acts)
    check = {"accuracy": float((m.logit_diff(clean, task.io_tokens, task.s_tokens) > 0).float().mean()),
             "top1": float((clean.argmax(-1) == task.io_tokens).float().mean()),
             "logit_diff": ld_clean, "logit_diff_mean_ablated": ld_mean, "logit_diff_cf_patched": ld_cf_patch,
             "patch_to_cf_io": float((cf_patched.argmax(-1) == task.cf_io_tokens).float().mean()),
             # what an edit that changes nothing scores: the clean answer agreeing with the patched one
             "edit_accuracy_unedited": m.choice_agreement(clean, cf_patched, task.name_tokens)}
    ctx = dict(acts=acts, cf_patched=cf_patched, ld=ld, ld_clean=ld_clean, ld_mean=ld_mean,
               candidates=task.name_tokens)
    sup = SupervisedDictionary.fit(fit_acts, {a: fit.attribute(a) for a in ATTRIBUTES}, n_values)
    results = {"supervised": _supervised(sup, attrs, task.cf_io, fit, ctx)}
    if sae is not None:
        results[name] = _learned(sae, fit, fit_acts, task, cf_acts, attrs, n_values, edit_features, ctx, step)
    bar.close()
    return {"task": "ioi", "model": model.cfg.model_name, "hook": hook, "prompts": len(task),
            "fit_prompts": len(fit), "seed": seed, "edit_features": edit_features, "names": len(task.names),
            "templates": len(task.templates), "model_check": check, "dictionaries": results}


def check_counts(prompts: int, fit_prompts: int, edit_features: int) -> None:
    """InputError unless there are at least 2 prompts of each kind and 1 edit feature."""
    for option, value, least in (("--prompts", prompts, 2), ("--fit-prompts", fit_prompts, 2),
                                 ("--edit-features", edit_features, 1)):
        if value < least:
            raise InputError(f"{option} must be at least {least} (got {value})")


def _approximation(ld, recon, removed, ld_clean: float, ld_mean: float, suffix: str = "") -> dict:
    """Sufficiency of `recon` and necessity of what `removed` leaves out, with the logit differences."""
    ld_rec, _ = ld(recon)
    ld_rm, _ = ld(removed)
    return {f"sufficiency{suffix}": m.sufficiency(ld_rec, ld_clean, ld_mean), f"logit_diff_kept{suffix}": ld_rec,
            f"necessity{suffix}": m.necessity(ld_rm, ld_clean, ld_mean), f"logit_diff_removed{suffix}": ld_rm}


def _control(ld, edited, magnitude: torch.Tensor, ctx: dict) -> dict:
    _, logits = ld(edited)
    return {"edit_accuracy": m.choice_agreement(logits, ctx["cf_patched"], ctx["candidates"]),
            "edit_magnitude": float(magnitude.mean())}


def _supervised(sup: SupervisedDictionary, attrs: dict, cf_io: torch.Tensor, fit, ctx: dict) -> dict:
    acts, ld = ctx["acts"], ctx["ld"]
    recon = sup.reconstruct(attrs)
    fit_mean = sup.reconstruct({a: fit.attribute(a) for a in ATTRIBUTES}).mean(0)
    out = _approximation(ld, recon, acts - recon + fit_mean, ctx["ld_clean"], ctx["ld_mean"])
    io_part = sup.part(EDIT_ATTRIBUTE, attrs[EDIT_ATTRIBUTE])
    edited = acts - io_part + sup.part(EDIT_ATTRIBUTE, cf_io)
    out.update(_control(ld, edited, m.feature_weight(io_part, recon - sup.bias), ctx))
    out["task_features"] = sum(int(c.norm(dim=-1).gt(0).sum()) for c in sup.codes.values())
    return out


def _learned(sae, fit, fit_acts, task, cf_acts, attrs, n_values, n_edit: int, ctx: dict, step) -> dict:
    acts, ld = ctx["acts"], ctx["ld"]
    fit_codes, codes = step(dict_codes.encode(sae, fit_acts)), dict_codes.encode(sae, acts)
    cf_codes = step(dict_codes.encode(sae, cf_acts))
    ranked = {a: m.ranked_features(m.f1_scores(fit_codes.active, fit.attribute(a), n_values[a])[2], RANK_DEPTH)
              for a in ATTRIBUTES}
    chosen = torch.zeros(codes.z.shape[1], dtype=torch.bool)
    chosen[[f for a in ATTRIBUTES for feats in ranked[a] for f in feats[:n_edit]]] = True
    full = _approximation(ld, codes.recon, acts - codes.recon + fit_codes.recon.mean(0), ctx["ld_clean"],
                          ctx["ld_mean"], "_all")
    part = dict_codes.part(sae, acts, codes, chosen)
    part_mean = dict_codes.part(sae, fit_acts, fit_codes, chosen).mean(0)
    out = _approximation(ld, fit_acts.mean(0) + part - part_mean, acts - part + part_mean, ctx["ld_clean"],
                         ctx["ld_mean"]) | full
    remove = _edit_mask(ranked[EDIT_ATTRIBUTE], attrs[EDIT_ATTRIBUTE], codes.active, n_edit)
    add = _edit_mask(ranked[EDIT_ATTRIBUTE], task.cf_io, cf_codes.active, n_edit)
    removed = dict_codes.part(sae, acts, codes, remove)
    edited = acts - removed + dict_codes.part(sae, cf_acts, cf_codes, add)
    out.update(_control(ld, edited, m.feature_weight(removed, codes.recon - codes.base), ctx))
    out["task_features"] = int(chosen.sum())
    out["interpretability"] = {a: _best_scores(codes.active, attrs[a], n_values[a]) for a in ATTRIBUTES}
    return out


def _edit_mask(ranked: list[list[int]], values: torch.Tensor, active: torch.Tensor, n_edit: int) -> torch.Tensor:
    """[n, d_sae] per prompt the first n_edit features of its value's ranking that fire on it."""
    mask = torch.zeros_like(active)
    for i, v in enumerate(values.tolist()):
        firing = [f for f in ranked[v] if active[i, f]][:n_edit]
        mask[i, firing] = True
    return mask


def _best_scores(active: torch.Tensor, labels: torch.Tensor, n_values: int) -> dict:
    """Mean over the values present of the best feature's F1, and that feature's precision and recall."""
    precision, recall, f1 = m.f1_scores(active, labels, n_values)
    features, best = m.best_per_value(f1)
    present = torch.bincount(labels, minlength=n_values) > 0
    values = torch.arange(n_values)[present]
    return {"f1": float(best[present].mean()), "precision": float(precision[features[values], values].mean()),
            "recall": float(recall[features[values], values].mean())}
