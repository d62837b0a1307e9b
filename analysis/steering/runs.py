"""Steering in a workspace: load the dictionaries a config names, store a finished run, re-run a stored one.

The store is read before anything is generated (unknown dictionaries and features fail first) and written
once, after the run, in a single statement: bad input stores nothing.
"""
from __future__ import annotations

from dataclasses import asdict

import duckdb

from analysis.dictionaries import open_dictionary
from analysis.steering.hooks import Numbers
from analysis.steering.lab import SteerConfig, SteerResult
from analysis.steering.targets import SteerDictionary
from store import steering as repo
from store.errors import InputError
from store.workspace import Workspace


def dictionary_names(config: SteerConfig) -> list[str]:
    """Dictionaries a config uses (features and triggers), in first-use order."""
    names: dict[str, None] = {}
    for spec in config.interventions:
        if spec.dictionary:
            names[spec.dictionary] = None
        if spec.trigger is not None:
            names[spec.trigger.dictionary] = None
    return list(names)


def load_steer_dictionary(con: duckdb.DuckDBPyConnection, name: str, ws: Workspace,
                          device: str | None = None) -> SteerDictionary:
    """A workspace dictionary with the max activations of its analysed features (none if not analysed), on
    `device` (None: the best there is, where load_model puts the model by default)."""
    row, sae = open_dictionary(ws, name, device, con=con)
    max_acts = repo.feature_max_acts(con, name)
    return SteerDictionary(name, sae, hook=row.hook or None, max_acts=max_acts, model=row.model)


def load_dictionaries(con: duckdb.DuckDBPyConnection, config: SteerConfig, ws: Workspace,
                      device: str | None = None) -> dict[str, SteerDictionary]:
    return {name: load_steer_dictionary(con, name, ws, device) for name in dictionary_names(config)}


def stored_config(result: SteerResult) -> dict:
    """The config column: what was asked for, plus the numbers its strengths resolved to."""
    return {**result.config.to_dict(), "resolved": [asdict(n) for n in result.numbers]}


def parse_stored(data: dict) -> tuple[SteerConfig, list[Numbers] | None]:
    data = dict(data)
    resolved = data.pop("resolved", None)
    try:
        config = SteerConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"the stored run cannot be read: {exc}") from None
    numbers = [Numbers(**n) for n in resolved] if resolved is not None else None
    return config, numbers


def record_run(con: duckdb.DuckDBPyConnection, result: SteerResult) -> int:
    """Store a finished run; sets and returns result.run_id."""
    names = [s.dictionary for s in result.config.interventions if s.dictionary]
    result.run_id = repo.add_run(con, result.config.model, names[0] if names else None, stored_config(result),
                                 result.default_texts, result.steered_texts, result.measures)
    return result.run_id


def load_run(con: duckdb.DuckDBPyConnection, run_id: int) -> tuple[SteerConfig, list[Numbers] | None]:
    """The config and pinned numbers of a stored run, to run it again with the same seed."""
    return parse_stored(repo.get_run(con, run_id).config)
