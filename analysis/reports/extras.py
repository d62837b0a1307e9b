"""The optional parts of a report: steering runs, head scores and per-feature head attribution.

They come from tables later migrations add (`steering_runs`, `head_runs` + `head_stats`, `feature_heads`).
A read-only connection to a store from before those migrations lacks them; the part is then left out
instead of failing the report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from store.errors import InputError


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
    """Column name -> DuckDB type of `table`, or None when the store has no such table."""
    rows = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' "
                       "AND table_name = ? ORDER BY column_index", [table]).fetchall()
    return dict(rows) or None


def parse_json(value: Any) -> Any:
    """A JSON column's value as Python data (DuckDB hands JSON over as text); other values unchanged."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class SteeringRun:
    run_id: str
    prompt: str = ""
    default_texts: list[str] = field(default_factory=list)
    """The unsteered generations (one per sample)."""
    steered_texts: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    """Scalar measures, flattened: kl_mean, perplexity_steered, "DICT:ID steered mean", ..."""
    kl_per_position: list[float] = field(default_factory=list)
    """KL(default || steered) of the next-token distributions at each generated position."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was generated: interventions (as text), model, chat, seed, temperature, ..."""
    targets: list[tuple[str, int]] = field(default_factory=list)
    """(dictionary, feature) pairs the run steers."""


def _intervention_text(item: dict) -> str:
    target = f"{item.get('dictionary')}:{item.get('feature')}" if item.get("dictionary") else \
        f"direction@{item.get('hook')}"
    text = f"{item.get('mode')} {target} strength {item.get('strength')}"
    if item.get("value") is not None:
        text += f" value {item['value']}"
    if item.get("trigger"):
        trigger = item["trigger"]
        text += f" when {trigger.get('dictionary')}:{trigger.get('feature')} > {trigger.get('threshold')}"
    return text + f" ({item.get('positions', 'all')} positions)"


def _flat_measures(measures: dict) -> dict[str, float]:
    flat = {k: v for k, v in measures.items() if is_number(v)}
    for target in measures.get("targets") or []:
        for arm in ("default", "steered"):
            for stat, value in (target.get(arm) or {}).items():
                if is_number(value):
                    flat[f"{target.get('label')} {arm} {stat}"] = value
    return flat


def _steering_run(row: tuple) -> SteeringRun:
    run_id, created, model, config, default_texts, steered_texts, measures = row
    config, measures = parse_json(config) or {}, parse_json(measures) or {}
    items = [i for i in config.get("interventions") or [] if isinstance(i, dict)]
    settings = {"created": created.isoformat() if hasattr(created, "isoformat") else created, "model": model,
                "interventions": "; ".join(_intervention_text(i) for i in items) or "none"}
    settings |= {k: v for k, v in config.items() if k not in ("prompt", "interventions", "model")}
    targets = [(str(i["dictionary"]), int(i["feature"])) for i in items
               if i.get("dictionary") and is_number(i.get("feature"))]
    return SteeringRun(run_id=str(run_id), prompt=str(config.get("prompt", "")), default_texts=list(default_texts),
                       steered_texts=list(steered_texts), measures=_flat_measures(measures),
                       kl_per_position=[float(v) for v in measures.get("kl_per_position") or []],
                       settings=settings, targets=list(dict.fromkeys(targets)))


def steering_runs(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[SteeringRun]:
    """The named steering runs (ids as `sparsescope steer` lists them), in the order asked.

    InputError lists the ids that are not numbers or not stored.
    """
    if not run_ids:
        return []
    if table_columns(con, "steering_runs") is None:
        raise InputError("this workspace has no steering runs yet (run `sparsescope steer` first)")
    bad = [r for r in run_ids if not str(r).strip().isdigit()]
    if bad:
        raise InputError(f"steering run ids are numbers, got: {', '.join(map(str, bad))}")
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    rows = {r[0]: r for r in con.execute(
        "SELECT id, created, model, config, default_texts, steered_texts, measures FROM steering_runs "
        "WHERE id IN (SELECT unnest(?::INTEGER[]))", [ids]).fetchall()}
    missing = [str(i) for i in ids if i not in rows]
    if missing:
        raise InputError(f"unknown steering run(s): {', '.join(missing)}")
    return [_steering_run(rows[i]) for i in ids]


@dataclass
class HeadScores:
    model: str
    corpus: str
    """Corpus the scores were measured on (the newest head scan of the model)."""
    n_layers: int
    n_heads: int
    scores: dict[str, list[list[float | None]]] = field(default_factory=dict)
    """Score name -> [layer][head] matrix (None where a head has no value)."""
    kv_groups: list[int] = field(default_factory=list)
    """KV group of each query head (grouped-query attention shares keys and values within a group)."""


def head_scores(con: duckdb.DuckDBPyConnection, model: str) -> HeadScores | None:
    """Every head's scores for `model` from its newest head scan (`head_runs`, `head_stats`), or None."""
    if table_columns(con, "head_stats") is None or table_columns(con, "head_runs") is None:
        return None
    run = con.execute("SELECT corpus, n_layers, n_heads FROM head_runs WHERE model = ? "
                      "ORDER BY finished DESC LIMIT 1", [model]).fetchall()
    if not run:
        return None
    corpus, n_layers, n_heads = run[0]
    result = HeadScores(model, corpus, n_layers, n_heads, kv_groups=[0] * n_heads)
    for layer, head, group, score, value in con.execute(
            "SELECT layer, head, kv_group, score, value FROM head_stats WHERE model = ? AND corpus = ? "
            "ORDER BY score, layer, head", [model, corpus]).fetchall():
        matrix = result.scores.setdefault(score, [[None] * n_heads for _ in range(n_layers)])
        if layer < n_layers and head < n_heads:
            matrix[layer][head] = value
            result.kv_groups[head] = group
    return result


def head_attribution(con: duckdb.DuckDBPyConnection, dictionary: str,
                     features: list[int]) -> dict[int, list[tuple[str, float]]]:
    """feature -> [(head, share of the pre-activation)] of an attention-output dictionary (`feature_heads`)."""
    if table_columns(con, "feature_heads") is None:
        return {}
    found: dict[int, list[tuple[str, float]]] = {}
    for feature, head, weight in con.execute(
            "SELECT feature, head, weight FROM feature_heads WHERE dictionary = ? AND feature IN "
            "(SELECT unnest(?::INTEGER[])) ORDER BY feature, head", [dictionary, list(features)]).fetchall():
        found.setdefault(feature, []).append((f"H{head}", float(weight)))
    return found
