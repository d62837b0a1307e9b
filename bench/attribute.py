"""Attribution cost against one forward + backward of the model, same prompt, same process.

    python bench/attribute.py [--quick] [--workspace W] [--dictionaries A,B,C,D] [--threads 2]

Prints one JSON line: {"bench": "attribute", "seconds": ..., "forward_backward_seconds": ..., "ratio": ...,
"graph_seconds": ..., ...}. `seconds`: node attributions (one spliced forward and backward, every feature and
error node of every dictionary) on a 64-token prompt; `forward_backward_seconds`: one forward of the model and a
backward to its embeddings, no dictionary (target: ratio <= 5); `graph_seconds`: node attributions, pruning to at
most 50 feature nodes, their refinement (`refine_seconds`, 20 rounds at most) and the edges between them (target:
< 120). Medians of 3 runs, interleaved.

Full mode reads the workspace's dictionaries (default: the TopK dictionaries of smollm2-135m-instruct, one per
hook); --quick runs on tiny-random with four random TopK dictionaries, one per hook.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")

PROMPT = ("The committee met on Tuesday to review the budget for the new library. After a long discussion about "
          "the cost of books, chairs and computers, the members agreed that the library would open in the spring, "
          "and the mayor thanked everyone for their patience. The librarian then showed the plans for the reading "
          "room, the garden and the children's corner, and promised that the first books would arrive in")


def _quick_sites(model):
    import torch

    from analysis.attribution import make_sites
    from sae.dictionaries import build_training_sae
    from tests.factories import dict_spec

    torch.manual_seed(0)
    hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
             "blocks.1.hook_resid_post"]
    return make_sites(model, [(f"q{i}", model.cfg.model_name, h,
                               build_training_sae(dict_spec(hook_name=h, d_sae=512, k=16)))
                              for i, h in enumerate(hooks)])


def _full_sites(model, ws_path: str | None, names: str | None):
    from analysis.attribution import make_sites
    from analysis.dictionaries import open_dictionary
    from store import Workspace, session
    from store.dictionaries import list_dictionaries, require_dictionary

    ws = Workspace.resolve(ws_path, create=False)
    with session(ws.db_path, read_only=True) as con:
        if names:
            rows = [require_dictionary(con, n) for n in names.split(",")]
        else:
            seen = {}
            for r in list_dictionaries(con):
                if r.model == model.cfg.model_name and r.arch == "topk" and "resid" in r.hook:
                    seen.setdefault(r.hook, r)
            rows = list(seen.values())
        return make_sites(model, [(r.name, r.model, r.hook, open_dictionary(ws, r.name, "cpu", con)[1])
                                  for r in rows])


def _forward_backward(model, tokens, target: int) -> float:
    import torch

    start = time.perf_counter()
    kept = {}

    def grab(x, hook):
        x.requires_grad_(True)
        kept["x"] = x
        return x

    with model.hooks(fwd_hooks=[("hook_embed", grab)]):
        logit = model(tokens)[0, -1, target]
    torch.autograd.grad(logit, kept["x"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workspace")
    parser.add_argument("--dictionaries")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from analysis.attribution import AttributionConfig, attribute, make_baseline, node_attributions
    from sae.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model("tiny-random" if args.quick else "smollm2-135m-instruct", device="cpu")
    model.requires_grad_(False)
    sites = _quick_sites(model) if args.quick else _full_sites(model, args.workspace, args.dictionaries)
    tokens = model.to_tokens(PROMPT)[:, :64]
    if tokens.shape[1] < 64:  # the target is a 64-token prompt: a tokenizer that makes fewer must not pass unnoticed
        raise SystemExit(f"the bench prompt is {tokens.shape[1]} tokens for {model.cfg.model_name}; 64 are needed")
    target = int(tokens[0, -1])
    baseline = make_baseline(model, sites, "zero")
    fb, nodes, graph = [], [], []
    _forward_backward(model, tokens, target)  # warm-up
    for _ in range(3):
        fb.append(_forward_backward(model, tokens, target))
        start = time.perf_counter()
        node_attributions(model, tokens, sites, target, None, baseline)
        nodes.append(time.perf_counter() - start)
    result = attribute(model, tokens, sites, target, None, baseline, AttributionConfig(max_nodes=50))
    graph.append(result.seconds["nodes"] + result.seconds.get("refine", 0.0) + result.seconds["edges"])
    seconds, ref = statistics.median(nodes), statistics.median(fb)
    print(json.dumps({"bench": "attribute", "quick": args.quick, "model": model.cfg.model_name,
                      "dictionaries": [f"{s.name}@{s.hook} ({s.d_sae})" for s in sites], "tokens": tokens.shape[1],
                      "threads": args.threads, "seconds": round(seconds, 3),
                      "forward_backward_seconds": round(ref, 3), "ratio": round(seconds / ref, 2),
                      "graph_seconds": round(graph[0], 2),
                      "refine_seconds": round(result.seconds.get("refine", 0.0), 2),
                      "refine_rounds": result.faith.rounds, "graph_nodes": len(result.nodes),
                      "graph_links": len(result.links), "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
