"""Search by text (Neuronpedia's "search via inference"): the features that fire most on a text, in every
dictionary of a model, grouped by hook and dictionary.

    result = search_workspace(ws, "The cat sat on the mat.", top=10)          # the CLI's path
    result = search_text(model, text, {"demo-topk": (hook, sae)}, top=10)     # the UI's path (cached model)
    result = with_notes(result, notes, analysed)                              # labels and densities added

The model runs once, up to the deepest hook a dictionary reads; each dictionary then encodes its hook's
activations with its architecture's `feature_activations` (codebook codes and MP pursuits read as the analysis
reads them). A feature's score is its largest activation over the text. The BOS token the model prepends is an
attention sink, not text: it is skipped, as the analysis pass skips it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from store.errors import InputError

N_TOP = 10
"""Features listed per dictionary when the caller asks for no other number."""
MAX_TOP = 1000
"""Most features listed per dictionary."""


@dataclass(frozen=True)
class Firing:
    position: int
    """Index into TextSearch.tokens (BOS, when there is one, is position 0)."""
    token: str
    activation: float


@dataclass(frozen=True)
class FeatureHit:
    feature: int
    max_act: float
    """Largest activation over the text's tokens."""
    firings: tuple[Firing, ...]
    """Every token where the feature fires, in text order."""
    label: str | None = None
    """Its label in the store (feature_labels), None when it has none."""
    density: float | None = None
    """Fraction of the analysis corpus' tokens it fires on; None when the dictionary is not analysed."""


@dataclass(frozen=True)
class DictionaryHits:
    dictionary: str
    hook: str
    hits: tuple[FeatureHit, ...]
    """The strongest features on the text, strongest first (ties by feature id)."""
    analysed: bool = False
    """The dictionary has an analysis in the store, so its features have pages."""


@dataclass(frozen=True)
class TextSearch:
    model: str
    tokens: list[str]
    """Text of each token, as the tokenizer decodes it alone."""
    groups: tuple[DictionaryHits, ...]
    """One per dictionary, in the model's hook order, then by name."""
    truncated: bool = False
    """The text was longer than the model's context: only its first n_ctx tokens were read."""
    has_bos: bool = False

    def by_hook(self) -> dict[str, list[DictionaryHits]]:
        """hook -> its dictionaries' results, hooks in the model's order."""
        grouped: dict[str, list[DictionaryHits]] = {}
        for group in self.groups:
            grouped.setdefault(group.hook, []).append(group)
        return grouped

    def features(self) -> dict[str, list[int]]:
        """dictionary -> the features it lists (what the store is asked for labels)."""
        return {g.dictionary: [h.feature for h in g.hits] for g in self.groups}


def check_top(top: int) -> int:
    if not 1 <= top <= MAX_TOP:
        raise InputError(f"top must be between 1 and {MAX_TOP} features per dictionary (got {top})")
    return top


def rank_features(feature_acts: np.ndarray, tokens: Sequence[str], first: int, top: int) -> tuple[FeatureHit, ...]:
    """The `top` features with the largest activation over rows first.. of feature_acts [T, d_sae], each with
    every token where it fires."""
    acts = feature_acts[first:]  # (T', d_sae): BOS left out
    if not len(acts):
        return ()
    peak = acts.max(axis=0)  # (d_sae,)
    fired = np.nonzero(peak > 0)[0]
    order = fired[np.lexsort((fired, -peak[fired]))][:top]  # strongest first, ties by feature id
    hits = []
    for feature in order.tolist():
        rows = np.nonzero(acts[:, feature] > 0)[0]
        firings = tuple(Firing(int(first + r), tokens[first + r], float(acts[r, feature])) for r in rows)
        hits.append(FeatureHit(int(feature), float(peak[feature]), firings))
    return tuple(hits)


def search_text(model, text: str, dictionaries: Mapping[str, tuple[str, object]], top: int = N_TOP) -> TextSearch:
    """Run `model` once on `text` and rank every dictionary's features on it (name -> (hook, loaded dictionary))."""
    from analysis.features.inspector import check_prompt, encode_rows, prompt_activations, starts_with_bos

    check_top(top)
    check_prompt(text, "the text")
    if not dictionaries:
        raise InputError("no dictionary to search with")
    hooks = sorted({hook for hook, _ in dictionaries.values()})
    token_ids, acts, truncated = prompt_activations(model, hooks, text)
    tokens = [model.tokenizer.decode([t]) for t in token_ids.tolist()]
    has_bos = starts_with_bos(model, token_ids)
    first = 1 if has_bos else 0
    groups = []
    for name, (hook, sae) in dictionaries.items():
        try:
            feature_acts = encode_rows(sae, acts[hook]).cpu().numpy()  # (T, d_sae)
        except InputError as exc:
            raise InputError(f"dictionary {name!r} at {hook}: {exc}") from None
        groups.append(DictionaryHits(name, hook, rank_features(feature_acts, tokens, first, top)))
    order = {hook: i for i, hook in enumerate(model.hook_dict)}
    groups.sort(key=lambda g: (order[g.hook], g.dictionary))
    return TextSearch(model.cfg.model_name, tokens, tuple(groups), truncated, has_bos)


def with_notes(result: TextSearch, notes: Mapping[str, Mapping[int, tuple[str | None, float | None]]],
               analysed: set[str] | frozenset[str]) -> TextSearch:
    """`result` with each feature's (label, density) from `notes` (dictionary -> feature -> ...), and which
    dictionaries are analysed."""
    groups = []
    for group in result.groups:
        known = notes.get(group.dictionary, {})
        hits = tuple(replace(h, label=known.get(h.feature, (None, None))[0] or None,
                             density=known.get(h.feature, (None, None))[1]) for h in group.hits)
        groups.append(replace(group, hits=hits, analysed=group.dictionary in analysed))
    return replace(result, groups=tuple(groups))


# ------------------------------------------------------------------------------------------- a workspace

def pick_dictionaries(rows: Sequence, model: str | None = None, names: Sequence[str] | None = None,
                      default_model: str | None = None) -> tuple[str, list]:
    """(model, dictionary rows) to search: the rows named (all of the model's when `names` is None or empty).

    Without `model`: the model of the first dictionary named, else the one model the workspace has dictionaries
    of, else `default_model` when it has some.
    InputError for a model without dictionaries, an unknown name, or a dictionary of another model.
    """
    usable = [r for r in rows if r.model and r.hook]
    models = sorted({r.model for r in usable})
    if not models:
        raise InputError("no dictionary in this workspace has a known model and hook: train one with "
                         "`sparsescope train` (or run `sparsescope demo`)")
    named = [r for r in usable if names and r.name == names[0]]
    if model is None:
        if named:  # the model of the first dictionary named
            model = named[0].model
        elif len(models) == 1:
            model = models[0]
        elif default_model in models:
            model = default_model
        else:
            raise InputError(f"the workspace has dictionaries of several models ({', '.join(models)}): "
                             "choose one with --model")
    if model not in models:
        raise InputError(f"no dictionaries for model {model!r} in this workspace (models with dictionaries: "
                         f"{', '.join(models)})")
    mine = {r.name: r for r in usable if r.model == model}
    if not names:
        return model, [mine[n] for n in sorted(mine)]
    by_name = {r.name: r for r in rows}
    picked = []
    for name in dict.fromkeys(names):
        if name not in by_name:
            raise InputError(f"unknown dictionary {name!r} (dictionaries of {model}: {', '.join(sorted(mine))})")
        if name not in mine:
            raise InputError(f"dictionary {name!r} does not read {model} at a known hook (dictionaries of "
                             f"{model}: {', '.join(sorted(mine))})")
        picked.append(mine[name])
    return model, picked


def read_notes(con, features: Mapping[str, Sequence[int]]) -> tuple[dict, set[str]]:
    """(dictionary -> feature -> (label, density), analysed dictionaries) for the features listed (dictionary ->
    features, as TextSearch.features() gives them)."""
    from store import queries

    notes = {name: queries.feature_notes(con, name, ids) for name, ids in features.items()}
    return notes, {name for name, _, _ in queries.analysed_dictionaries(con)}


def search_workspace(ws, text: str, model: str | None = None, names: Sequence[str] | None = None,
                     top: int = N_TOP, device: str | None = None) -> TextSearch:
    """search_text over the workspace's dictionaries of `model` (see pick_dictionaries), labels and densities
    from the store. Every input is checked before the model is loaded."""
    from analysis.dictionaries import dictionary_folder, open_dictionary
    from analysis.features.inspector import check_prompt
    from sae.models import DEFAULT_MODEL, load_model
    from store.db import session
    from store.dictionaries import list_dictionaries

    check_prompt(text, "the text")
    check_top(top)
    with session(ws.db_path, read_only=True) as con:
        model, rows = pick_dictionaries(list_dictionaries(con), model, names, DEFAULT_MODEL)
        if not names:  # all of the model's: those whose folder is gone cannot be read
            rows = [r for r in rows if dictionary_folder(ws, r).is_dir()]
            if not rows:
                raise InputError(f"the dictionaries of {model} are missing from {ws.dictionaries_dir}")
        saes = {r.name: (r.hook, open_dictionary(ws, r.name, device=device, con=con)[1]) for r in rows}
    lm = load_model(model, device=device)
    result = search_text(lm, text, saes, top)
    with session(ws.db_path, read_only=True) as con:
        notes, analysed = read_notes(con, result.features())
    return with_notes(result, notes, analysed)
