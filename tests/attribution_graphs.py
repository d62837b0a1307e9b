"""Hand-made attribution graphs in store/graphs.py's layout, for the Attribution page's tests (AppTests and the
browser test): nodes that name real features of a test store's dictionaries, one error node per dictionary, links
from every node of a column to every node of the next and from the last column to the logit node."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Column:
    dictionary: str
    hook: str
    layer: int
    features: Sequence[tuple[int, int, float, float]]
    """(feature, position, activation, attribution) of each feature node."""
    error: float = 0.1
    """The attribution of the column's error node (at the last position)."""
    error_pos: int | None = field(default=None)


def graph_document(prompt: str, tokens: Sequence[str], target: str, contrast: str | None,
                   columns: Sequence[Column], metric: float = 2.0, top_n: int = 10) -> dict:
    last = len(tokens) - 1
    layers = []
    for col in columns:
        nodes = [dict(node_id=f"{col.dictionary}:{f}@{pos}", feature_type="feature", dictionary=col.dictionary,
                      hook=col.hook, layer=col.layer, feature=f, ctx_idx=pos, token=tokens[pos], activation=act,
                      attribution=attr) for f, pos, act, attr in col.features]
        pos = last if col.error_pos is None else col.error_pos
        nodes.append(dict(node_id=f"{col.dictionary}:error@{pos}", feature_type="error", dictionary=col.dictionary,
                          hook=col.hook, layer=col.layer, feature=None, ctx_idx=pos, token=tokens[pos],
                          activation=0.0, attribution=col.error))
        layers.append(nodes)
    logit = dict(node_id="logit", feature_type="logit", dictionary=None, hook=None, layer=None, feature=None,
                 ctx_idx=last, token=target, activation=0.0, attribution=metric)
    layers.append([logit])
    links = []
    for upstream, downstream in zip(layers, layers[1:]):
        for src in upstream:
            for dst in downstream:
                links.append(dict(source=src["node_id"], target=dst["node_id"],
                                  weight=round(src["attribution"] / len(downstream), 6)))
    metadata = dict(prompt=prompt, prompt_tokens=list(tokens), target=target, contrast=contrast,
                    metric="logit_diff" if contrast else "logit", ablation="mean",
                    faithfulness=dict(recovered=0.72, top_removed=0.41, top_n=top_n),
                    dictionaries=[c.dictionary for c in columns])
    return dict(metadata=metadata, nodes=[n for layer in layers for n in layer], links=links)


def save_document(con, doc: dict, model: str = "tiny-random", recovered: float | None = 0.72,
                  top_removed: float | None = 0.41, ablation: str = "mean", metric: float = 2.0) -> int:
    """Store `doc` with store.graphs.save_graph; returns its id."""
    from store.graphs import save_graph

    meta = doc["metadata"]
    return save_graph(con, model=model, prompt=meta["prompt"], target=meta["target"], contrast=meta["contrast"],
                      dictionaries=meta["dictionaries"], metric=metric, recovered=recovered,
                      top_removed=top_removed, ablation=ablation, graph=doc)
