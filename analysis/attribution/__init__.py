"""Attribution across dictionaries: which features, at which tokens, make the model produce a target token.

    sites = make_sites(model, [(name, row.model, row.hook, sae), ...])       # dictionaries, upstream first
    tokens = prompt_tokens(model, "The capital of France is")
    target, contrast = target_ids(model, " Paris", " London")
    baseline = make_baseline(model, sites, "mean", corpus_tokens)            # or "zero"
    result = attribute(model, tokens, sites, target, contrast, baseline, AttributionConfig(max_nodes=50))
    graph = graph_document(model, prompt, sites, result, config)             # store.graphs.save_graph layout
    done = ablate_node(model, tokens, sites, target, contrast, baseline, site=0, feature=7, pos=3)
    done.change, predicted_change(attribution_of_that_node)                  # measured vs attribution's estimate

Module map
    splice.py        the dictionaries spliced in with TransformerLens hooks (x -> decode(f) + eps): the node pass,
                     the edge pass (each site cut), the ablation pass, corpus means
    graph.py         node attributions (activation x gradient), pruning, edges between consecutive dictionaries
    faithfulness.py  the share of the metric the pruned graph recovers, and the share its top nodes carry
    run.py           the request's checks, one attribution end to end, the graph document
    ablate.py        one node ablated and the model rerun: the metric before and after (predicted: -attribution)
Method: Marks et al., "Sparse Feature Circuits" (attribution patching; edges with the upstream error held
constant; faithfulness by ablation); the graph's JSON layout follows circuit-tracer's.
"""
from analysis.attribution.ablate import NodeAblation, ablate_node, predicted_change, site_index
from analysis.attribution.faithfulness import Faithfulness, faithfulness, keep_masks, top_nodes
from analysis.attribution.graph import Link, Node, NodeScores, edges, node_attributions, prune_links, prune_nodes
from analysis.attribution.run import (
    Attribution,
    AttributionConfig,
    attribute,
    corpus_contexts,
    graph_document,
    make_baseline,
    make_sites,
    node_id,
    open_request,
    target_ids,
)
from analysis.attribution.splice import Baseline, Site, corpus_means, metric_of, run_ablated
from sae.models import prompt_tokens, single_token

__all__ = [
    "Attribution", "AttributionConfig", "Baseline", "Faithfulness", "Link", "Node", "NodeAblation", "NodeScores",
    "Site", "ablate_node", "attribute", "corpus_contexts", "corpus_means", "edges", "faithfulness", "graph_document",
    "keep_masks", "make_baseline", "make_sites", "metric_of", "node_attributions", "node_id", "open_request",
    "predicted_change", "prompt_tokens", "prune_links", "prune_nodes", "run_ablated", "single_token", "site_index",
    "target_ids", "top_nodes",
]
