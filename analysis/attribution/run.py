"""One attribution end to end: check the request, splice the dictionaries, score the nodes, prune, compute the
edges, measure faithfulness, and lay the result out as the graph document store/graphs.py describes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import Tensor

from analysis.attribution.faithfulness import Faithfulness, faithfulness
from analysis.attribution.graph import Link, Node, NodeScores, edges, node_attributions, prune_links, prune_nodes
from analysis.attribution.select import refine
from analysis.attribution.splice import Baseline, Site, corpus_means
from sae.models import check_hook, single_token
from store.errors import InputError

MEAN_CONTEXTS = 16
"""Corpus contexts the mean baseline averages over."""


@dataclass(frozen=True)
class AttributionConfig:
    max_nodes: int = 50
    """At most this many feature nodes in the pruned graph (and as many error nodes)."""
    node_share: float = 0.8
    """Keep the nodes, largest |attribution| first, until they carry this share of the total |attribution|."""
    edge_share: float = 0.95
    """Keep the edges, largest |weight| first, until they carry this share of the total |weight|."""
    ablation: Literal["mean", "zero"] = "mean"
    """Baseline of attribution and ablation: each node's corpus mean, or zero."""
    top_n: int = 10
    """Feature nodes ablated for the `top_removed` figure."""
    freeze_final_norm: bool = False
    """Treat the final norm's scale as a constant in the backward pass (circuit-tracer freezes norm scales)."""
    refine: int = 20
    """Rounds of swapping feature nodes towards the graph-only model's metric (select.py); 0: attribution only."""

    def __post_init__(self):
        if self.max_nodes <= 0 or self.top_n <= 0:
            raise ValueError(f"max_nodes and top_n must be positive (got {self.max_nodes}, {self.top_n})")
        if self.refine < 0:
            raise ValueError(f"refine must be 0 or more rounds (got {self.refine})")
        if not (0 < self.node_share <= 1 and 0 < self.edge_share <= 1):
            raise ValueError(f"node_share and edge_share must be in (0, 1] (got {self.node_share}, "
                             f"{self.edge_share})")
        if self.ablation not in ("mean", "zero"):
            raise ValueError(f"ablation must be mean or zero (got {self.ablation!r})")


@dataclass
class Attribution:
    tokens: Tensor
    target: int
    contrast: int | None
    scores: NodeScores
    nodes: list[Node]
    links: list[Link]
    faith: Faithfulness
    baseline: Baseline
    seconds: dict[str, float] = field(default_factory=dict)
    """nodes, edges, faithfulness: wall seconds of each stage."""

    @property
    def metric(self) -> float:
        return self.scores.metric


# ------------------------------------------------------------------------------------------- checks

def target_ids(model, target: str, contrast: str | None) -> tuple[int, int | None]:
    tid = single_token(model, target, "target")
    if contrast is None:
        return tid, None
    cid = single_token(model, contrast, "contrast")
    if cid == tid:
        raise InputError(f"the contrast {contrast!r} is the target itself; the logit difference would be 0")
    return tid, cid


def make_sites(model, named: list[tuple[str, str, str, object]]) -> list[Site]:
    """Sites from (name, model, hook, loaded dictionary), upstream first; InputError for a dictionary of another
    model, a hook the model lacks, or two dictionaries on one hook."""
    if not named:
        raise InputError("no dictionary given: name one or more with --dictionaries")
    order = {hook: i for i, hook in enumerate(model.hook_dict)}
    sites, seen = [], {}
    for name, model_name, hook, sae in named:
        if model_name != model.cfg.model_name:
            raise InputError(f"dictionary {name!r} belongs to model {model_name!r}, not {model.cfg.model_name!r}")
        layer = check_hook(model, hook)
        if hook in seen:
            raise InputError(f"dictionaries {seen[hook]!r} and {name!r} both read {hook}; give one per hook")
        seen[hook] = name
        sites.append(Site(name, hook, layer, sae))
    return sorted(sites, key=lambda s: order[s.hook])


def make_baseline(model, sites: list[Site], kind: str, corpus_tokens: Tensor | None = None,
                  corpus: str = "") -> Baseline:
    """Zeros, or each site's mean feature activations and mean error over corpus contexts."""
    dev = next(model.parameters()).device
    if kind == "zero":
        return Baseline("zero", [torch.zeros(s.d_sae, device=dev) for s in sites],
                        [torch.zeros(_d_in(s), device=dev) for s in sites], "zero")
    if corpus_tokens is None or corpus_tokens.numel() == 0:
        raise InputError("mean ablation needs corpus contexts to average over; build a corpus or use "
                         "--ablation zero")
    feats, errs = corpus_means(model, corpus_tokens.to(dev), sites)
    n = corpus_tokens.shape[0] * (corpus_tokens.shape[1] - 1)
    return Baseline("mean", feats, errs, f"mean over {n:,} tokens of corpus {corpus or '(given)'}", corpus or None,
                    int(corpus_tokens.shape[0]))


def corpus_contexts(con, corpus: str, n: int = MEAN_CONTEXTS) -> Tensor:
    """[n, ctx] token ids of the corpus's first n contexts, what the mean baseline averages over; InputError for a
    corpus the store lacks."""
    from store.corpora import context_tokens, get_corpus

    if get_corpus(con, corpus) is None:
        raise InputError(f"no corpus {corpus!r} in the workspace for the mean baseline: build it "
                         "(`sparsescope corpus build`) or use the zero ablation (--ablation zero)")
    return torch.tensor(context_tokens(con, corpus, 0, n), dtype=torch.long)


def _d_in(site: Site) -> int:
    return int(site.sae.cfg.d_in)


def open_request(space, model: str, prompt: str, target: str, contrast: str | None, dictionaries: str | None,
                 ablation: str, corpus: str, device=None):
    """An attribution request on a workspace (`dictionaries`: comma-separated names, None: the model's first
    dictionary on each hook), every input checked before any work: (model, sites, tokens, target id, contrast id,
    baseline)."""
    from analysis.dictionaries import open_dictionary
    from sae.models import load_model, prompt_tokens
    from store import session
    from store.dictionaries import list_dictionaries, require_dictionary

    with session(space.db_path, read_only=True) as con:
        if dictionaries:
            names = [n.strip() for n in dictionaries.split(",") if n.strip()]
            rows = [require_dictionary(con, n) for n in names]
        else:
            rows = _default_rows(list_dictionaries(con), model)
        for row in rows:
            if row.model != model:
                raise InputError(f"dictionary {row.name!r} belongs to model {row.model!r}, not {model!r} "
                                 "(--model picks the model)")
        if not rows:
            raise InputError(f"no dictionary of {model} in the workspace: train one (`sparsescope train`) or "
                             "name them with --dictionaries")
        lm = load_model(model, device=device)
        tokens = prompt_tokens(lm, prompt).to(lm.cfg.device)
        tid, cid = target_ids(lm, target, contrast)
        sites = make_sites(lm, [(r.name, r.model, r.hook, open_dictionary(space, r.name, device=device, con=con)[1])
                                for r in rows])
        corpus_tokens = corpus_contexts(con, corpus) if ablation == "mean" else None
    return lm, sites, tokens, tid, cid, make_baseline(lm, sites, ablation, corpus_tokens, corpus)


def _default_rows(rows, model: str):
    """The model's first dictionary on each hook (the store's order)."""
    seen = {}
    for row in rows:
        if row.model == model and row.hook not in seen:
            seen[row.hook] = row
    return list(seen.values())


# ------------------------------------------------------------------------------------------- the run

def attribute(model, tokens: Tensor, sites: list[Site], target: int, contrast: int | None, baseline: Baseline,
              config: AttributionConfig = AttributionConfig(),
              progress: Callable[[str, int], Callable[[], None]] | None = None) -> Attribution:
    """Node attributions, the pruned graph, its edges and its faithfulness. `progress(stage, total)` returns a
    tick function called once per unit of that stage."""
    first_pos = 1 if tokens.shape[1] > 1 else 0
    seconds = {}
    start = time.perf_counter()
    scores = node_attributions(model, tokens, sites, target, contrast, baseline, config.freeze_final_norm)
    nodes = prune_nodes(scores, config.max_nodes, config.node_share, first_pos)
    seconds["nodes"] = time.perf_counter() - start
    pruned, rounds = None, 0
    if config.refine:
        start = time.perf_counter()
        refined = refine(model, tokens, sites, scores, nodes, baseline, target, contrast, config.refine,
                         first_pos=first_pos, tick=progress("refine", config.refine) if progress else None)
        nodes, pruned, rounds = refined.nodes, refined.history[0], len(refined.history) - 1
        seconds["refine"] = time.perf_counter() - start
    start = time.perf_counter()
    tick = progress("edges", len(nodes)) if progress else None
    links = prune_links(edges(model, tokens, sites, scores, nodes, baseline, tick), config.edge_share)
    seconds["edges"] = time.perf_counter() - start
    start = time.perf_counter()
    faith = faithfulness(model, tokens, sites, nodes, baseline, target, contrast, config.top_n, first_pos,
                         pruned=pruned, rounds=rounds)
    seconds["faithfulness"] = time.perf_counter() - start
    return Attribution(tokens, target, contrast, scores, nodes, links, faith, baseline, seconds)


def node_id(site: Site, node: Node) -> str:
    return f"{site.name}:{'error' if node.feature is None else node.feature}@{node.pos}"


def graph_document(model, prompt: str, sites: list[Site], result: Attribution, config: AttributionConfig,
                   labels: dict[tuple[str, int], str] | None = None) -> dict:
    """The graph as store/graphs.py lays it out (nodes, links, metadata with the faithfulness figures)."""
    labels = labels or {}
    tokens = list(model.to_str_tokens(result.tokens[0]))
    target = model.to_single_str_token(result.target)
    contrast = None if result.contrast is None else model.to_single_str_token(result.contrast)
    last = len(tokens) - 1
    nodes = []
    for n in result.nodes:
        s = sites[n.site]
        kind = "error" if n.feature is None else "feature"
        node = {"node_id": node_id(s, n), "feature_type": kind, "dictionary": s.name, "hook": s.hook,
                "layer": s.layer, "feature": n.feature, "ctx_idx": n.pos, "token": tokens[n.pos],
                "activation": n.activation, "attribution": n.attribution}
        if n.feature is not None and (s.name, n.feature) in labels:
            node["label"] = labels[(s.name, n.feature)]
        nodes.append(node)
    nodes.append({"node_id": "logit", "feature_type": "logit", "dictionary": None, "hook": None,
                  "layer": model.cfg.n_layers, "feature": None, "ctx_idx": last, "token": target,
                  "activation": result.metric, "attribution": result.faith.full - result.faith.empty,
                  "token_id": result.target})
    links = [{"source": node_id(sites[link.source.site], link.source),
              "target": "logit" if link.target is None else node_id(sites[link.target.site], link.target),
              "weight": link.weight} for link in result.links]
    f = result.faith
    metadata = {
        "prompt": prompt, "prompt_tokens": tokens, "target": target, "contrast": contrast,
        "metric": result.metric, "metric_kind": "logit" if contrast is None else "logit difference",
        "ablation": result.baseline.kind, "baseline": result.baseline.source,
        "corpus": result.baseline.corpus, "corpus_contexts": result.baseline.contexts,
        "faithfulness": {"recovered": f.recovered, "top_removed": f.top_removed, "top_n": f.top_n,
                         "full": f.full, "empty": f.empty, "graph": f.graph, "without_top": f.without_top,
                         "recovered_by_attribution": f.recovered_pruned, "refine_rounds": f.rounds},
        "dictionaries": [s.name for s in sites], "model": model.cfg.model_name,
        "max_nodes": config.max_nodes, "node_share": config.node_share, "edge_share": config.edge_share,
        "method": "attribution patching (activation x gradient), edges with the upstream error held constant",
        "selection": (f"attribution pruning, then {config.refine} rounds at most of swaps towards the graph-only "
                      f"model's metric ({f.rounds} taken)") if config.refine else "attribution pruning",
        "seconds": result.seconds,
    }
    return {"metadata": metadata, "nodes": nodes, "links": links}
