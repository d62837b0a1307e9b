"""The JSON report (schema "sparsescope-report", version 1; see SCHEMA.md) and importing its labels.

`report_to_json` writes everything the HTML report shows as data; `import_report` reads such a file and
restores the features' labels, notes and explanations (with their scores) into a dictionary of the same name (or
the one named) in another workspace. Readers accept any version up to SCHEMA_VERSION; a file from a newer
SparseScope is refused.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb

from analysis.reports.collect import FeatureEntry, Report
from analysis.reports.graphs import GraphEntry
from analysis.reports.task_evals import TaskEvalEntry
from store import dictionaries as dict_repo
from store.errors import InputError
from store.explanations import Explained, ScoreRow, import_explanations
from store.portability import import_labels
from store.queries import Example

SCHEMA = "sparsescope-report"
SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """NaN and infinities become null, tuples lists: the file is strict JSON any reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _example(ex: Example) -> dict:
    return {"band": ex.band, "rank": ex.rank, "corpus": ex.corpus, "context_id": ex.context_id,
            "position": ex.position, "activation": ex.activation, "window_start": ex.window_start,
            "tokens": list(ex.tokens), "token_acts": list(ex.token_acts)}


def _feature(entry: FeatureEntry) -> dict:
    c = entry.card
    return {
        "feature": c.feature, "label": c.label, "notes": c.notes, "count": c.count, "density": c.density,
        "mean_act": c.mean_act, "max_act": c.max_act, "decoder_norm": c.decoder_norm,
        "max_decoder_cos": c.max_decoder_cos, "histogram": [list(b) for b in c.histogram],
        "top_examples": [_example(e) for e in c.top_examples],
        "quantile_examples": [_example(e) for e in c.quantile_examples],
        "promoted": [{"token_id": r.id, "token": r.text, "value": r.value} for r in c.promoted],
        "suppressed": [{"token_id": r.id, "token": r.text, "value": r.value} for r in c.suppressed],
        "decoder_neighbors": [{"feature": r.id, "cosine": r.value} for r in c.decoder_neighbors],
        "cooccurring": [{"feature": r.id, "jaccard": r.value} for r in c.cooccurring],
        "mp_steps": [{"step": r.id, "count": r.value} for r in c.mp_steps],
        "mp_parents": [{"feature": r.id, "count": r.value} for r in c.mp_parents],
        "head_attribution": [{"head": h, "share": s} for h, s in entry.head_attribution],
        "steering_runs": list(entry.steering),
        "explanations": [{"explainer": e.explainer, "text": e.text,
                          "scores": [{"scorer": s.scorer, "metric": s.metric, "value": s.value,
                                      "baseline": s.baseline, "n_examples": s.n_examples} for s in e.scores]}
                         for e in entry.explanations],
    }


def _graph(entry: GraphEntry) -> dict:
    r = entry.row
    return {"id": r.id, "model": r.model, "prompt": r.prompt, "target": r.target, "contrast": r.contrast,
            "dictionaries": list(r.dictionaries), "metric": r.metric, "recovered": r.recovered,
            "top_removed": r.top_removed, "ablation": r.ablation, "n_nodes": r.n_nodes, "n_links": r.n_links,
            "created": r.created, "graph": entry.document}


def _task_eval(entry: TaskEvalEntry) -> dict:
    e = entry.picked
    return {"dictionary": e.dictionary, "run": e.run, "task": e.task, "hook": e.hook, "seed": e.seed,
            "edit_features": e.edit_features, "command": entry.command, "result": e.result,
            "compared_with": [{"dictionary": p.dictionary, "run": p.run, "figures": p.learned}
                              for p in entry.peers[1:]]}


def report_to_dict(report: Report) -> dict:
    d = report.dictionary
    summary = {k: getattr(d, k) for k in ("name", "model", "hook", "arch", "d_in", "d_sae", "k", "source",
                                          "corpus", "n_tokens", "metrics")}
    summary["peers"] = [vars(p) for p in d.peers]
    summary["pareto"] = d.pareto
    heads = None if report.heads is None else vars(report.heads)
    return _clean({"schema": SCHEMA, "version": SCHEMA_VERSION, "generated": report.generated,
                   "dictionary": summary, "features": [_feature(f) for f in report.features],
                   "steering_runs": [vars(r) for r in report.steering], "heads": heads,
                   "graphs": [_graph(g) for g in report.graphs],
                   "task_evaluations": [_task_eval(e) for e in report.task_evals]})


def report_to_json(report: Report) -> str:
    return json.dumps(report_to_dict(report), ensure_ascii=False, indent=1, allow_nan=False, default=str)


def read_report(path: str | Path) -> dict:
    """Load and check a JSON report; InputError when it is not one this version can read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path} is not a SparseScope JSON report (schema {SCHEMA!r} expected)")
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise InputError(f"{path} has report schema version {version!r}; this SparseScope reads 1..{SCHEMA_VERSION}")
    if not isinstance(data.get("dictionary"), dict) or not isinstance(data.get("features"), list):
        raise InputError(f"{path} lacks the dictionary or features of a report")
    return data


def _labels(data: dict) -> list[tuple[int, str, str]]:
    rows = []
    for item in data["features"]:
        feature, label, notes = item.get("feature"), item.get("label") or "", item.get("notes") or ""
        if not isinstance(feature, int) or not isinstance(label, str) or not isinstance(notes, str):
            raise InputError(f"malformed feature entry in report: {str(item)[:80]}")
        if label or notes:
            rows.append((feature, label, notes))
    return rows


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _score(feature: int, item) -> ScoreRow:
    if not isinstance(item, dict):
        raise ValueError(item)
    scorer, metric, n = item.get("scorer"), item.get("metric"), item.get("n_examples")
    value, baseline = item.get("value"), item.get("baseline")
    if not (isinstance(scorer, str) and scorer and isinstance(metric, str) and metric and _number(value)
            and _number(baseline) and isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ValueError(item)
    return ScoreRow(feature, scorer, metric, value, baseline, n)


def _explanations(data: dict) -> list[Explained]:
    """The explanations of a report's features (reports written before they were exported have none)."""
    rows, seen = [], set()
    for item in data["features"]:
        feature = item.get("feature")
        for e in item.get("explanations") or []:
            try:
                explainer, text = e.get("explainer"), e.get("text")
                if not (isinstance(explainer, str) and explainer and isinstance(text, str) and text.strip()):
                    raise ValueError(e)
                scores = tuple(_score(feature, s) for s in e.get("scores") or [])
            except (AttributeError, ValueError):
                raise InputError(f"malformed explanation of feature {feature} in report: {str(e)[:80]}") from None
            if (feature, explainer) in seen or len({(s.scorer, s.metric) for s in scores}) < len(scores):
                raise InputError(f"feature {feature} has explanation {explainer!r} or one of its scores twice in "
                                 "the report")
            seen.add((feature, explainer))
            rows.append(Explained(feature, explainer, text, scores))
    return rows


def import_report(con: duckdb.DuckDBPyConnection, path: str | Path, dictionary: str | None = None) -> tuple[str, int]:
    """Restore the labels, notes and explanations of a JSON report; returns (dictionary, number of features
    labelled or explained).

    The target dictionary (the report's own name unless `dictionary` is given) must exist in this workspace
    with the same d_sae; nothing is written otherwise. An explanation of the report replaces the same explainer's
    explanation of that feature (with its scores); the workspace's other explanations stay, and a report without
    explanations changes none.
    """
    data = read_report(path)
    target = dictionary or str(data["dictionary"].get("name") or "")
    row = dict_repo.get_dictionary(con, target)
    analysed = con.execute("SELECT count(*) FROM analyses WHERE dictionary = ?", [target]).fetchone()[0]
    if row is None and not analysed:
        known = ", ".join(d.name for d in dict_repo.list_dictionaries(con)) or "none"
        raise InputError(f"unknown dictionary {target!r} in this workspace (known: {known}); "
                         "pass --dict NAME to import into another one")
    d_sae = row.d_sae if row else None
    theirs = data["dictionary"].get("d_sae")
    if d_sae is not None and theirs is not None and d_sae != theirs:
        raise InputError(f"the report's dictionary has d_sae={theirs} but {target!r} has d_sae={d_sae}")
    labels = _labels(data)
    explanations = _explanations(data)
    if d_sae is not None:
        outside = sorted({f for f, _, _ in labels if not 0 <= f < d_sae}
                         | {e.feature for e in explanations if not 0 <= e.feature < d_sae})
        if outside:
            raise InputError(f"feature(s) outside 0..{d_sae - 1}: {', '.join(map(str, outside[:20]))}")
    import_labels(con, target, labels)
    if explanations:
        import_explanations(con, target, explanations)
    return target, len({f for f, _, _ in labels} | {e.feature for e in explanations})
