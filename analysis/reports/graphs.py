"""Attribution graphs attached to a report (`sparsescope report DICT --graph ID`): the stored graph (store/graphs.py),
the labels of the features it names, and its section in HTML and Markdown.

A graph need not use the report's dictionary: it is shown all the same and its section says so. Node links lead to a
feature's card when the report holds it, like the report's other links.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from analysis.display import visible
from analysis.graph_view import (
    faithfulness_words,
    feature_notes,
    graph_figure,
    metric_words,
    node_features,
    node_note,
    prompt_tokens,
    top_nodes,
)
from analysis.reports.extras import table_columns
from store import graphs as repo
from store.errors import InputError

TOP_NODES = 20
"""Nodes listed in a graph's table (the figure draws them all)."""
FIGURE = ("columns: dictionaries, upstream first, the metric (star) last; rows: token positions; node size: "
          "|attribution| (blue positive, red negative); squares: reconstruction errors; line width: |link weight|.")
FAITHFULNESS = ("recovered: the share of the metric the graph alone keeps when every node outside it is ablated; "
                "top removed: the share lost when the graph's strongest nodes are ablated, everything else kept.")


@dataclass
class GraphEntry:
    row: repo.GraphRow
    document: dict
    """The graph in store/graphs.py's layout (metadata, nodes, links), as `sparsescope attribute --json` writes it."""
    notes: dict[tuple[str, int], str] = field(default_factory=dict)
    """(dictionary, feature) -> its label and explanations, for the features the graph names."""

    def uses(self, dictionary: str) -> bool:
        return dictionary in self.row.dictionaries


def graph_entries(con: duckdb.DuckDBPyConnection, graph_ids: list[str]) -> list[GraphEntry]:
    """The named attribution graphs in the order asked; InputError names the stored ids when one is unknown."""
    if not graph_ids:
        return []
    if table_columns(con, "graphs") is None:
        raise InputError("this workspace has no attribution graphs yet (run `sparsescope attribute` first)")
    stored = [g.id for g in repo.list_graphs(con)]
    known = ", ".join(map(str, sorted(stored))) or "none"
    bad = [str(g) for g in graph_ids if not str(g).strip().isdigit() or int(g) not in stored]
    if bad:
        raise InputError(f"unknown attribution graph(s): {', '.join(bad)} (stored: {known})")
    entries = []
    for graph_id in dict.fromkeys(int(g) for g in graph_ids):
        row, document = repo.get_graph(con, graph_id)
        entries.append(GraphEntry(row, document, feature_notes(con, node_features(document))))
    return entries


def graph_figure_dict(entry: GraphEntry) -> dict:
    """The Attribution page's figure of the graph, as a plain figure dict (what the reports draw)."""
    return graph_figure(entry.document, entry.row.dictionaries, entry.notes).to_dict()


def _where(node: dict, tokens: list[str]) -> str:
    pos = node.get("ctx_idx")
    token = repr(visible(tokens[pos])) if pos is not None and pos < len(tokens) else "?"
    return f"{token}@{pos}"


def facts(entry: GraphEntry) -> list[tuple[str, str]]:
    """(what, value) lines shown above every format's figure."""
    r = entry.row
    return [("model", r.model), ("prompt", repr(r.prompt)), ("target", repr(r.target)),
            ("contrast", repr(r.contrast) if r.contrast is not None else "none"),
            ("metric", f"{metric_words(r)} = {r.metric:.4g}"),
            ("dictionaries", ", ".join(r.dictionaries)),
            ("nodes / links", f"{r.n_nodes:,} / {r.n_links:,}"),
            ("faithfulness", faithfulness_words(r, entry.document["metadata"])),
            ("created", r.created.isoformat(timespec="seconds") if hasattr(r.created, "isoformat") else str(r.created))]


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    kind: str
    dictionary: str | None
    feature: int | None
    where: str
    attribution: float | None
    activation: float | None
    label: str


def node_rows(entry: GraphEntry, n: int = TOP_NODES) -> list[NodeRow]:
    """The graph's strongest nodes (by |attribution|) as the tables show them."""
    tokens = prompt_tokens(entry.document)
    return [NodeRow(node["node_id"], node["feature_type"], node.get("dictionary"),
                    None if node.get("feature") is None else int(node["feature"]), _where(node, tokens),
                    node.get("attribution"), node.get("activation") if node["feature_type"] == "feature" else None,
                    node_note(node, entry.notes) or ("reconstruction error" if node["feature_type"] == "error" else ""))
            for node in top_nodes(entry.document, n)]


def links_to_card(row: NodeRow, dictionary: str, in_report: set[int]) -> bool:
    """Whether the node is a feature of the report's dictionary whose card the report holds."""
    return row.kind == "feature" and row.dictionary == dictionary and row.feature in in_report


def not_used_words(entry: GraphEntry, dictionary: str) -> str | None:
    """A sentence for a graph that does not use the report's dictionary (None when it does)."""
    if entry.uses(dictionary):
        return None
    return (f"This graph does not use the report's dictionary {dictionary} (its dictionaries: "
            f"{', '.join(entry.row.dictionaries)}); it is shown as stored, without links to feature cards.")
