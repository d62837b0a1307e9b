"""Steering runs (one row per run, re-runnable from its config) and the per-feature numbers steering reads."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import duckdb

from store.errors import InputError


@dataclass(frozen=True)
class SteeringRun:
    id: int
    created: datetime
    model: str
    dictionary: str | None
    config: dict
    """Everything needed to re-run: prompt, interventions, generation settings, resolved numbers."""
    default_texts: list[str]
    steered_texts: list[str]
    measures: dict


_COLUMNS = "id, created, model, dictionary, config, default_texts, steered_texts, measures"


def _row(row: tuple) -> SteeringRun:
    id_, created, model, dictionary, config, default_texts, steered_texts, measures = row
    return SteeringRun(id_, created, model, dictionary, json.loads(config), list(default_texts),
                       list(steered_texts), json.loads(measures))


def add_run(con: duckdb.DuckDBPyConnection, model: str, dictionary: str | None, config: dict,
            default_texts: Sequence[str], steered_texts: Sequence[str], measures: dict) -> int:
    """Store one run (a single statement, so it is all or nothing); returns its id."""
    row = con.execute(
        "INSERT INTO steering_runs (model, dictionary, config, default_texts, steered_texts, measures) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        [model, dictionary, json.dumps(config), list(default_texts), list(steered_texts),
         json.dumps(measures, allow_nan=False)]).fetchall()
    return int(row[0][0])


def get_run(con: duckdb.DuckDBPyConnection, run_id: int) -> SteeringRun:
    rows = con.execute(f"SELECT {_COLUMNS} FROM steering_runs WHERE id = ?", [int(run_id)]).fetchall()
    if not rows:
        raise InputError(f"no steering run {run_id} (`sparsescope steer --list` shows the stored runs)")
    return _row(rows[0])


def list_runs(con: duckdb.DuckDBPyConnection, dictionary: str | None = None, limit: int = 50) -> list[SteeringRun]:
    """Newest first; only runs whose first feature comes from `dictionary` when it is given."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM steering_runs WHERE ?::VARCHAR IS NULL OR dictionary = ? "
        "ORDER BY id DESC LIMIT ?", [dictionary, dictionary, int(limit)]).fetchall()
    return [_row(r) for r in rows]


def feature_max_acts(con: duckdb.DuckDBPyConnection, dictionary: str,
                     features: Sequence[int] | None = None) -> dict[int, float]:
    """features.max_act of an analysed dictionary's features (all when features is None; those not found
    are left out, so an unanalysed dictionary gives {})."""
    if features is None:
        rows = con.execute("SELECT feature, max_act FROM features WHERE dictionary = ?", [dictionary]).fetchall()
    elif not features:
        return {}
    else:
        rows = con.execute("SELECT feature, max_act FROM features WHERE dictionary = ? AND feature IN "
                           "(SELECT unnest(?::INTEGER[]))", [dictionary, sorted(set(features))]).fetchall()
    return {int(f): float(v) for f, v in rows}
