"""Bring your own dictionary: import a SAELens dictionary (a folder or saelens:RELEASE/ID) and evaluate it on the
workspace's corpus for its model and hook, so it is listed with the numbers of a trained one and `analyze` works
on it at once.

    outcome = import_in_workspace(ws, ImportRequest("saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre"))

The store is held only briefly: a short session checks the name, the model is loaded and checked against the
dictionary without the store (unknown model, a hook it lacks, a d_in that does not match: InputError, nothing
written), a second short session reads the corpus contexts (creating `builtin` on first use), the evaluation
runs without the store, and the folder and its row and metrics are written in one transaction at the end.

The metrics are those of a trained dictionary (analysis.evaluate): FVU, L0, dead fraction and the rest on the
activations of the corpus' last contexts (the held-out end, as training holds it out; the held-out rows of an
activation cache of the same model, hook and corpus when there is one), CE loss recovered on the first
EVAL_CONTEXTS of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.dictionaries import check_new_name, import_name, import_row, install_dictionary, load_for_import
from analysis.evaluate import ModelEval, activation_metrics
from store import dictionaries as repo
from store.db import session
from store.errors import InputError
from store.workspace import Workspace

EVAL_TOKENS = 8192
"""Corpus tokens the activation metrics are measured on (whole contexts)."""
EVAL_CONTEXTS = 16
"""Contexts the CE loss and KL are measured on (as after training)."""


@dataclass(frozen=True)
class ImportRequest:
    ref: str
    """A SAELens-format folder, or saelens:RELEASE/ID."""
    name: str | None = None
    """Name in the workspace; None: the folder's name or RELEASE_ID."""
    evaluate: bool = True
    corpus: str = "builtin"
    """Corpus of the model the metrics are measured on (`builtin` is created on first use)."""
    tokens: int = EVAL_TOKENS
    device: str | None = None

    def check(self) -> None:
        if self.tokens < 1:
            raise InputError(f"--eval-tokens must be at least 1 (got {self.tokens})")


@dataclass(frozen=True)
class ImportOutcome:
    row: repo.DictionaryRow
    metrics: dict[str, float]
    """Empty when not evaluated."""
    note: str = ""
    """Why it was not evaluated, or what it was evaluated on."""


@dataclass(frozen=True)
class EvalInputs:
    """What the evaluation reads from the store and the workspace, read in one short session."""

    corpus: str
    rows_from: Path | None
    """Activation cache whose held-out rows are used, or None (run the model on `tokens`)."""
    tokens: torch.Tensor
    """[n, ctx] corpus contexts whose activations are measured (the cache's held-out contexts when it has one)."""


def import_in_workspace(ws: Workspace, req: ImportRequest, lm=None) -> ImportOutcome:
    """Import, evaluate (unless req.evaluate is False or the dictionary names no model) and record."""
    req.check()
    name = import_name(req.ref, req.name)
    with session(ws.db_path) as con:
        check_new_name(ws, con, name)
    from sae.device import pick_device

    # on the device the model will run on, when it is evaluated (one device for the whole run)
    sae, path = load_for_import(req.ref, pick_device(req.device) if req.evaluate else "cpu")
    meta = sae.cfg.metadata
    if not req.evaluate:
        return _record(ws, import_row(ws, req.ref, name, sae, path), sae, path, {}, "not evaluated (--no-eval)")
    if not meta.model_name or not meta.hook_name:
        missing = "model" if not meta.model_name else "hook"
        return _record(ws, import_row(ws, req.ref, name, sae, path), sae.cpu(), path, {},
                       f"not evaluated: the dictionary does not say which {missing} it reads")
    lm = checked_model(sae, meta.model_name, meta.hook_name, req.device, lm)
    model = canonical_model_name(lm, meta.model_name)
    with session(ws.db_path) as con:
        inputs = eval_inputs(con, req, lm, model, meta.hook_name)
    metrics = evaluate_import(sae, lm, meta.hook_name, inputs)
    note = (f"evaluated on {metrics['eval_tokens']:,.0f} tokens of corpus {inputs.corpus} "
            f"({'activation cache ' + inputs.rows_from.name if inputs.rows_from else model + ' forward'})")
    return _record(ws, import_row(ws, req.ref, name, sae, path, model=model), sae.cpu(), path, metrics, note)


def _record(ws: Workspace, row: repo.DictionaryRow, sae, path, metrics: dict, note: str) -> ImportOutcome:
    # the store is opened only after the copy, to check the name again and record it
    return ImportOutcome(install_dictionary(ws, ws.db_path, row, sae, path, metrics), metrics, note)


def checked_model(sae, model_name: str, hook: str, device: str | None, lm=None):
    """The dictionary's model, loaded, with the dictionary's hook and width checked (InputError)."""
    from sae.models import check_hook, hook_output_dim, load_model

    if lm is None or lm.cfg.model_name != model_name:
        lm = load_model(model_name, device=device)
    check_hook(lm, hook)
    width = hook_output_dim(lm, hook)
    if width != sae.cfg.d_in:
        raise InputError(f"the dictionary has d_in={sae.cfg.d_in}, but {model_name} gives d={width} at {hook}")
    return lm


def canonical_model_name(lm, asked: str) -> str:
    """The name the loaded model goes by (TransformerLens resolves aliases: gpt2-small is gpt2), which steering
    and analysis compare against; the asked name when that one is not a name the loader knows."""
    from sae.models import DEFAULT_MODEL, TINY

    own = lm.cfg.model_name
    if own == asked or own in (DEFAULT_MODEL, TINY):
        return own
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(own)
    except ValueError:
        return asked
    return own


def eval_inputs(con, req: ImportRequest, lm, model: str, hook: str) -> EvalInputs:
    """The corpus contexts to measure on (up to req.tokens): its last contexts, or the held-out contexts of an
    activation cache of the same model, hook and corpus."""
    from analysis.corpora import ensure_corpus
    from store.corpora import context_tokens

    corpus = ensure_corpus(con, req.corpus, model, req.tokens)
    if corpus.ctx > lm.cfg.n_ctx:
        raise InputError(f"corpus contexts ({corpus.ctx} tokens) exceed the model's context ({lm.cfg.n_ctx})")
    cache, held_out = _covering_cache(con, model, hook, corpus.name)
    count = -(-req.tokens // corpus.ctx)
    if cache is None:
        count = min(corpus.n_contexts, count)
        ids = range(corpus.n_contexts - count, corpus.n_contexts)
    else:
        ids = held_out[:count]
    tokens = torch.tensor(context_tokens(con, corpus.name, ids.start, ids.stop), dtype=torch.long)
    return EvalInputs(corpus.name, cache, tokens)


def _covering_cache(con, model: str, hook: str, corpus: str) -> tuple[Path | None, range]:
    """(folder, held-out contexts) of a complete activation cache of model/hook/corpus, or (None, empty)."""
    from sae.activations import read_manifest
    from sae.sources import CacheSource
    from store.models import list_caches

    for row in list_caches(con):
        manifest = read_manifest(Path(row.path)) if (row.model, row.hook, row.corpus) == (model, hook, corpus) \
            else None
        if manifest is not None and manifest.complete and manifest.contexts_done >= 2:
            return Path(row.path), CacheSource(row.path).held_out_contexts
    return None, range(0)


def hook_rows(lm, hook: str, tokens: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Activations at `hook` of every position but the first (the attention sink, never trained on), float32
    [n * (ctx - 1), d] on the CPU."""
    from sae.activations import capture
    from sae.models import stop_layer

    device, stop, parts = next(lm.parameters()).device, stop_layer(lm, hook), []
    for ids in tokens.split(batch):
        with torch.inference_mode():
            acts = capture(lm, hook, ids.to(device), stop).float()
        parts.append(acts.view(ids.shape[0], ids.shape[1], -1)[:, 1:].reshape(-1, acts.shape[-1]).cpu())
    return torch.cat(parts)


def evaluate_import(sae, lm, hook: str, inputs: EvalInputs) -> dict[str, float]:
    """activation_metrics on the inputs' rows and ModelEval (CE loss, KL) on its first EVAL_CONTEXTS contexts,
    the dictionary on the model's device."""
    from sae.sources import CacheSource

    sae = sae.to(next(lm.parameters()).device)
    if inputs.rows_from is None:
        rows = hook_rows(lm, hook, inputs.tokens)
    else:  # the held-out rows of the contexts in `tokens` (the first of the held-out ones), in order
        n, ctx = inputs.tokens.shape
        rows = CacheSource(inputs.rows_from).held_out_rows()[:n * (ctx - 1)]
    metrics = activation_metrics(sae, rows)
    return metrics | ModelEval(lm, hook, inputs.tokens[:EVAL_CONTEXTS]).evaluate(sae)
