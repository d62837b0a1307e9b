"""Attribution graphs (migration 0011): one row per `sparsescope attribute` run, its nodes and links one JSON
document laid out close to circuit-tracer's graph JSON, so a graph exported from here reads like one of theirs:

    {"metadata": {"prompt", "prompt_tokens": [str], "target", "contrast", "metric", "ablation",
                  "faithfulness": {"recovered", "top_removed", "top_n"}, "dictionaries": [str], ...},
     "nodes": [{"node_id": "DICT:FEATURE@POS" | "DICT:error@POS" | "logit",
                "feature_type": "feature" | "error" | "logit", "dictionary", "hook", "layer", "feature",
                "ctx_idx", "token", "activation", "attribution"}, ...],
     "links": [{"source": node_id, "target": node_id, "weight"}, ...]}

`feature` is None for error and logit nodes; `attribution` is the node's effect on the metric; a link's weight is
how much of the upstream node's attribution flows through the downstream one. Written in one short transaction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import duckdb

from store.errors import InputError

NODE_TYPES = ("feature", "error", "logit")
ABLATIONS = ("mean", "zero")


@dataclass(frozen=True)
class GraphRow:
    id: int
    model: str
    prompt: str
    target: str
    contrast: str | None
    dictionaries: list[str]
    metric: float
    recovered: float | None
    top_removed: float | None
    ablation: str
    n_nodes: int
    n_links: int
    created: datetime


_COLUMNS = ("id, model, prompt, target, contrast, dictionaries, metric, recovered, top_removed, ablation, n_nodes, "
            "n_links, created")


def _row(row: tuple) -> GraphRow:
    values = list(row)
    values[5] = json.loads(values[5])
    return GraphRow(*values)


def check_graph(graph: dict) -> None:
    """Refuse a document that does not have the layout above (the UI and the export rely on it)."""
    for key in ("metadata", "nodes", "links"):
        if key not in graph:
            raise InputError(f"graph has no {key!r}")
    ids = set()
    for node in graph["nodes"]:
        if node.get("feature_type") not in NODE_TYPES:
            raise InputError(f"graph node {node.get('node_id')!r} has feature_type {node.get('feature_type')!r}; "
                             f"expected one of {', '.join(NODE_TYPES)}")
        ids.add(node["node_id"])
    for link in graph["links"]:
        if link["source"] not in ids or link["target"] not in ids:
            raise InputError(f"graph link {link['source']} -> {link['target']} names a node the graph lacks")


def save_graph(con: duckdb.DuckDBPyConnection, *, model: str, prompt: str, target: str, contrast: str | None,
               dictionaries: list[str], metric: float, recovered: float | None, top_removed: float | None,
               ablation: str, graph: dict) -> int:
    """Store one graph; returns its id."""
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {', '.join(ABLATIONS)} (got {ablation!r})")
    check_graph(graph)
    row = con.execute(
        "INSERT INTO graphs (model, prompt, target, contrast, dictionaries, metric, recovered, top_removed, "
        "ablation, n_nodes, n_links, graph) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [model, prompt, target, contrast, json.dumps(dictionaries), metric, recovered, top_removed, ablation,
         len(graph["nodes"]), len(graph["links"]), json.dumps(graph)]).fetchone()
    return int(row[0])


def list_graphs(con: duckdb.DuckDBPyConnection) -> list[GraphRow]:
    """Every stored graph, newest first."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM graphs ORDER BY created DESC, id DESC").fetchall()
    return [_row(r) for r in rows]


def get_graph(con: duckdb.DuckDBPyConnection, graph_id: int) -> tuple[GraphRow, dict] | None:
    """A graph's row and its document, or None."""
    row = con.execute(f"SELECT {_COLUMNS}, graph FROM graphs WHERE id = ?", [graph_id]).fetchone()
    if row is None:
        return None
    return _row(row[:-1]), json.loads(row[-1])


def delete_graph(con: duckdb.DuckDBPyConnection, graph_id: int) -> bool:
    """Remove a graph; False when there was none."""
    return con.execute("DELETE FROM graphs WHERE id = ? RETURNING id", [graph_id]).fetchone() is not None
