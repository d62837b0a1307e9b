"""Faithfulness of attribution graphs on the demo's dictionaries: prompts with an unambiguous next token.

    OMP_NUM_THREADS=1 python bench/faithfulness.py [WORKSPACE] [--dictionaries A,B,C,D] [--max-nodes 50]
        [--refine 20] [--ablation mean]

For each prompt (capital cities, a closing bracket, a repeated name, two indirect-object prompts) one graph as
`sparsescope attribute` builds it (nothing is stored), and one JSON line for the whole run:
  recovered                 share of the logit difference the graph alone recovers (everything else ablated)
  recovered_by_attribution  the same for the attribution-pruned graph before refinement (its baseline)
  top_removed               share lost when the graph's 10 feature nodes of largest attribution are ablated
  ok                        recovered >= 0.6 and top_removed >= 0.3
Default dictionaries: the demo's four residual-stream TopK dictionaries (layers 2, 6, 10, 14). Needs a demo
workspace (`make demo`); `make bench` leaves it out.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")

PROMPTS = [
    ("capital", "The capital of France is", " Paris", " London"),
    ("capital", "The capital of Japan is", " Tokyo", " Beijing"),
    ("bracket", "x = (a + b", ")", " +"),
    ("repeated name", "Mr. Brown met Mrs. Green at the shop. Later that day, Mr.", " Brown", " Green"),
    ("indirect object", "When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("indirect object", "Alice and Bob went to the park. Alice gave the ball to", " Bob", " Alice"),
]
DICTIONARIES = "demo-topk-l2,demo-topk,demo-topk-l10,demo-topk-l14"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", nargs="?", default="workspace")
    parser.add_argument("--dictionaries", default=DICTIONARIES)
    parser.add_argument("--max-nodes", type=int, default=50)
    parser.add_argument("--refine", type=int, default=20)
    parser.add_argument("--ablation", default="mean")
    args = parser.parse_args()
    import torch

    from analysis.attribution import AttributionConfig, attribute, open_request
    from store import Workspace

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    space = Workspace.resolve(args.workspace, create=False)
    config = AttributionConfig(max_nodes=args.max_nodes, ablation=args.ablation, refine=args.refine)
    rows = []
    for kind, prompt, target, contrast in PROMPTS:
        with contextlib.redirect_stdout(sys.stderr):  # the model loader prints; stdout is the JSON line alone
            lm, sites, tokens, tid, cid, baseline = open_request(space, "smollm2-135m-instruct", prompt, target,
                                                                 contrast, args.dictionaries, args.ablation,
                                                                 "builtin", "cpu")
        start = time.perf_counter()
        result = attribute(lm, tokens, sites, tid, cid, baseline, config)
        f = result.faith
        row = {"kind": kind, "prompt": prompt, "target": target, "contrast": contrast,
               "metric": round(result.metric, 3), "recovered": _round(f.recovered),
               "recovered_by_attribution": _round(f.recovered_pruned), "top_removed": _round(f.top_removed),
               "feature_nodes": sum(n.feature is not None for n in result.nodes), "refine_rounds": f.rounds,
               "seconds": round(time.perf_counter() - start, 1)}
        row["ok"] = bool((f.recovered or 0) >= 0.6 and (f.top_removed or 0) >= 0.3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"bench": "faithfulness", "dictionaries": args.dictionaries.split(","),
                      "max_nodes": args.max_nodes, "refine": args.refine, "ablation": args.ablation,
                      "prompts": rows, "ok": sum(r["ok"] for r in rows), "of": len(rows),
                      "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
