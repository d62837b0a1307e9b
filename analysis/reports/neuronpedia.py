"""Neuronpedia-compatible export: a dictionary's feature dashboards in the JSON layout SAEDashboard uploads.

Modelled on SAEDashboard's neuronpedia export (sae_dashboard/neuronpedia: NeuronpediaRunner writes one
`batch-N.json` per batch of features with NeuronpediaConverter; the classes in neuronpedia_dashboard.py fix
the fields). The folder we write:

    OUT/run_settings.json      what was exported: dictionary, model, hook, corpus, tokens (our own record)
    OUT/skipped_indexes.json   {"model_id", "layer", "sae_set", "log_sparsity": null, "skipped_indexes": [...]}
                               dead features (never fired), which Neuronpedia creates as dead
    OUT/batch-N.json           {"model_id", "layer", "sae_set", "features": [feature, ...]}
    OUT/explanations/batch-N.jsonl.gz
                               the features' explanations in words, one JSON object a line, gzipped: the layout of
                               Neuronpedia's explanation exports and imports (features of batch N, none if none)

Each feature, field by field (values rounded to 3 decimals, as SAEDashboard does):
    feature_index                  feature id
    activations                    one entry per stored example: {"bin_min", "bin_max", "bin_contains",
                                   "tokens": [token strings of the window], "values": [activation per token]};
                                   top examples use SAEDashboard's marker bin_min = -1, bin_max = max
                                   activation, bin_contains = -1; quantile band b of Q uses bin_min/max =
                                   b/Q and (b+1)/Q x max activation and bin_contains = the share of the
                                   feature's firings in that range, estimated from its histogram
    pos_str / pos_values           top 10 promoted tokens (W_dec @ W_U) and their logit effects
    neg_str / neg_values           top 10 suppressed tokens
    frac_nonzero                   firing density
    freq_hist_data_bar_values      histogram bin centres (geometric, the bins are log-spaced)
    freq_hist_data_bar_heights     histogram counts
    decoder_weights_dist           attention-output dictionaries: each head's share of the pre-activation
                                   (feature_heads, written by analyze); else []
    n_prompts_total, n_tokens_in_prompt, dataset
                                   contexts and context length of the analysed corpus, and its source
    logits_hist_data_bar_*, neuron_alignment_*, correlated_neurons_*, correlated_features_*
                                   empty lists: SparseScope does not compute the full logit-effect histogram,
                                   neuron alignment or activation correlations (its co-occurrence is Jaccard,
                                   not Pearson, so it is not passed off as correlated_features)

Each explanation line (Neuronpedia's Explanation record; its source id is LAYER-SAE_SET):
    modelId, layer, index          the model, "LAYER-SAE_SET" and the feature id as a string
    description                    the explanation's text, or the user's label
    typeName                       how it was made: "sparsescope-EXPLAINER" (e.g. sparsescope-patterns), or
                                   "sparsescope-label" for the user's own label (with its notes in `notes`)
    explanationModelName           what made it: the explainer's name, or "user" for a label
    notes                          the label's notes (null for explanations)
    scores                         [{"explanationScoreTypeName": "sparsescope-SCORER-METRIC",
                                     "explanationScoreModelName": "sparsescope-SCORER", "value",
                                     "jsonDetails": JSON text of {"baseline", "n_examples"}}, ...]; metrics that
                                   are undefined (null) are left out, as Neuronpedia's value is a number
"""
from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import duckdb
from tqdm.auto import tqdm

from analysis.reports.collect import ReportConfig, Selection, dictionary_summary, select_features
from analysis.reports.extras import head_attribution
from analysis.reports.output import folder_beside
from store.errors import InputError
from store.explanations import Explained, explanations_of
from store.paths import check_output_folder
from store.queries import Example, FeatureCard, Ranked

_EMPTY = ("logits_hist_data_bar_heights", "logits_hist_data_bar_values", "neuron_alignment_indices",
          "neuron_alignment_values", "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_l1",
          "correlated_neurons_pearson", "correlated_features_indices", "correlated_features_l1",
          "correlated_features_pearson")


def _r(values) -> list[float]:
    return [round(float(v), 3) for v in values]


def layer_of(hook: str) -> int:
    match = re.match(r"blocks\.(\d+)\.", hook or "")
    return int(match.group(1)) if match else 0


def _share(card: FeatureCard, lo: float, hi: float) -> float:
    total = sum(c for _, _, c in card.histogram)
    inside = sum(c for b_lo, b_hi, c in card.histogram if b_lo >= lo and b_hi <= hi * 1.000001)
    return round(inside / total, 4) if total else 0.0


def _activations(card: FeatureCard, n_bands: int) -> list[dict]:
    out = []
    for ex in card.top_examples + card.quantile_examples:
        kept = [(t, a) for t, a in zip(ex.tokens, ex.token_acts) if not math.isnan(a)]
        if ex.kind == "top":
            bounds = {"bin_min": -1, "bin_max": round(card.max_act, 3), "bin_contains": -1}
        else:
            lo, hi = ex.band / n_bands * card.max_act, (ex.band + 1) / n_bands * card.max_act
            bounds = {"bin_min": round(lo, 3), "bin_max": round(hi, 3), "bin_contains": _share(card, lo, hi)}
        out.append({**bounds, "tokens": [t for t, _ in kept], "values": _r(a for _, a in kept)})
    return out


def feature_dashboard(card: FeatureCard, n_bands: int, corpus: dict, heads: list[tuple[str, float]]) -> dict:
    """One feature in the NeuronpediaDashboardFeature layout."""
    return {
        "feature_index": card.feature,
        **{name: [] for name in _EMPTY},
        "neg_str": [r.text or "" for r in card.suppressed], "neg_values": _r(r.value for r in card.suppressed),
        "pos_str": [r.text or "" for r in card.promoted], "pos_values": _r(r.value for r in card.promoted),
        "frac_nonzero": card.density,
        "freq_hist_data_bar_values": _r(math.sqrt(lo * hi) if lo > 0 else hi / 2 for lo, hi, _ in card.histogram),
        "freq_hist_data_bar_heights": [int(c) for _, _, c in card.histogram],
        "n_prompts_total": corpus["n_contexts"], "n_tokens_in_prompt": corpus["ctx"], "dataset": corpus["source"],
        "decoder_weights_dist": _r(w for _, w in heads),
        "activations": _activations(card, n_bands),
    }


def explanation_records(explained: list[Explained], label: tuple[str, str] | None, head: dict) -> list[dict]:
    """A feature's explanations (and the user's label, first) as Neuronpedia Explanation records; `head` holds
    modelId, layer (the source id) and index."""
    out = []
    if label is not None and label[0]:
        out.append({**head, "description": label[0], "typeName": "sparsescope-label",
                    "explanationModelName": "user", "notes": label[1] or None, "scores": []})
    for e in explained:
        scores = [{"explanationScoreTypeName": f"sparsescope-{s.scorer}-{s.metric}",
                   "explanationScoreModelName": f"sparsescope-{s.scorer}", "value": s.value,
                   "jsonDetails": json.dumps({"baseline": s.baseline, "n_examples": s.n_examples}, allow_nan=False)}
                  for s in e.scores if s.value is not None and math.isfinite(s.value)]
        out.append({**head, "description": e.text, "typeName": f"sparsescope-{e.explainer}",
                    "explanationModelName": e.explainer, "notes": None, "scores": scores})
    return out


def _labels(con: duckdb.DuckDBPyConnection, dictionary: str, features: list[int]) -> dict[int, tuple[str, str]]:
    rows = con.execute("SELECT feature, label, notes FROM feature_labels WHERE dictionary = ? AND feature IN "
                       "(SELECT unnest(?::INTEGER[]))", [dictionary, features]).fetchall()
    return {f: (label or "", notes or "") for f, label, notes in rows}


_IN = "dictionary = ? AND feature IN (SELECT unnest(?::INTEGER[]))"
_EXAMPLES = f"""
SELECT e.feature, e.kind, e.band, e.rank, e.corpus, e.context_id, e.position, e.activation, e.window_start,
       e.token_acts, c.token_ids[e.window_start + 1 : e.window_start + len(e.token_acts)]
FROM (SELECT * FROM feature_examples WHERE {_IN}) e
LEFT JOIN contexts c ON c.corpus = e.corpus AND c.context_id = e.context_id
ORDER BY e.feature, e.kind DESC, e.band DESC, e.rank"""


def batch_cards(con: duckdb.DuckDBPyConnection, dictionary: str, model: str, corpus: str, n_tokens: int,
                features: list[int]) -> dict[int, FeatureCard]:
    """The parts of many feature cards a dashboard needs, in four queries (feature_card takes five per feature)."""
    args = [dictionary, list(features)]
    cards = {f: FeatureCard(dictionary, f, count, density, mean_act, max_act, None, None, "", "", corpus, n_tokens)
             for f, count, density, mean_act, max_act in con.execute(
                 f"SELECT feature, count, density, mean_act, max_act FROM features WHERE {_IN}", args).fetchall()}
    for f, lo, hi, count in con.execute(f"SELECT feature, bin_lo, bin_hi, count FROM feature_histograms "
                                        f"WHERE {_IN} ORDER BY feature, bin", args).fetchall():
        cards[f].histogram.append((lo, hi, count))
    for f, sign, rank, token_id, token, value in con.execute(
            f"SELECT feature, sign, rank, token_id, token, value FROM feature_logits WHERE {_IN} "
            "ORDER BY feature, sign DESC, rank", args).fetchall():
        (cards[f].promoted if sign == 1 else cards[f].suppressed).append(Ranked(rank, token_id, value, token))
    rows = con.execute(_EXAMPLES, args).fetchall()
    ids = sorted({t for r in rows for t in (r[10] or [])})
    text = dict(con.execute("SELECT token_id, token FROM vocab WHERE model = ? AND token_id IN "
                            "(SELECT unnest(?::INTEGER[]))", [model, ids]).fetchall()) if ids else {}
    for r in rows:
        example = Example(*r[1:10], tokens=[text.get(t, "") for t in (r[10] or [])])
        (cards[r[0]].top_examples if r[1] == "top" else cards[r[0]].quantile_examples).append(example)
    return cards


def _corpus(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    row = con.execute("SELECT n_contexts, ctx, source FROM corpora WHERE name = ?", [name]).fetchall()
    return dict(zip(("n_contexts", "ctx", "source"), row[0])) if row else {"n_contexts": 0, "ctx": 0, "source": name}


def _n_bands(con: duckdb.DuckDBPyConnection, dictionary: str) -> int:
    config = con.execute("SELECT config FROM analyses WHERE dictionary = ?", [dictionary]).fetchone()[0]
    stored = json.loads(config or "{}").get("n_quantiles") if config else None
    if isinstance(stored, int) and stored > 0:
        return stored
    top = con.execute("SELECT max(band) FROM feature_examples WHERE dictionary = ?", [dictionary]).fetchone()[0]
    return int(top) + 1 if top is not None else 1


def export_neuronpedia(con: duckdb.DuckDBPyConnection, dictionary: str, out: Path,
                       features: tuple[int, ...] | None = None, batch_size: int = 128,
                       progress: bool = False, force: bool = False) -> tuple[Path, int]:
    """Write the dashboards of `features` (default: every feature that ever fired) to the new folder `out`
    (`force`: replace an earlier export, never a folder SparseScope did not write)."""
    if batch_size < 1:
        raise InputError("--batch must be at least 1")
    out = check_output_folder(out, force)
    summary = dictionary_summary(con, dictionary)
    every = con.execute("SELECT feature, count FROM features WHERE dictionary = ? ORDER BY feature",
                        [dictionary]).fetchall()
    if features is not None:
        ids = select_features(con, dictionary, Selection(features=features), ReportConfig(max_features=len(every)))
    else:
        ids = [f for f, count in every if count > 0]
    head = {"model_id": summary.model, "layer": layer_of(summary.hook), "sae_set": dictionary}
    source = f"{head['layer']}-{dictionary}"  # Neuronpedia's id of the dictionary: LAYER-SAE_SET
    corpus, n_bands = _corpus(con, summary.corpus), _n_bands(con, dictionary)
    vocab_model = con.execute("SELECT model FROM analyses WHERE dictionary = ?", [dictionary]).fetchone()[0]
    with folder_beside(out, force) as tmp:
        _write(tmp / "run_settings.json", {**head, "hook": summary.hook, "arch": summary.arch,
                                           "corpus": summary.corpus, "n_tokens": summary.n_tokens,
                                           "exported_by": "sparsescope export-neuronpedia"})
        _write(tmp / "skipped_indexes.json", {**head, "log_sparsity": None,
                                              "skipped_indexes": [f for f, count in every if count == 0]})
        batches = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
        for n, chunk in enumerate(tqdm(batches, desc="neuronpedia", unit="batch", disable=not progress)):
            heads = head_attribution(con, dictionary, chunk)
            cards = batch_cards(con, dictionary, vocab_model, summary.corpus, summary.n_tokens, chunk)
            dashboards = [feature_dashboard(cards[f], n_bands, corpus, heads.get(f, [])) for f in chunk]
            _write(tmp / f"batch-{n}.json", {**head, "features": dashboards})
            explained, labels = explanations_of(con, dictionary, chunk), _labels(con, dictionary, chunk)
            lines = [record for f in chunk for record in explanation_records(
                explained.get(f, []), labels.get(f), {"modelId": summary.model, "layer": source, "index": str(f)})]
            if lines:
                (tmp / "explanations").mkdir(exist_ok=True)
                _write_lines(tmp / "explanations" / f"batch-{n}.jsonl.gz", lines)
    return out, len(ids)


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, allow_nan=False, default=str), encoding="utf-8")


def _write_lines(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
