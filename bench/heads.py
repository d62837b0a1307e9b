"""Head-score pass throughput vs a bare forward with do-nothing hooks on every hook_pattern, same tokens.

    python bench/heads.py [--quick] [--model M] [--tokens N] [--batch B] [--threads T]

Both runs stop after the last block (`stop_at_layer=n_layers`: scores need patterns, not logits) and go over
the same corpus batches. The scan is analysis.heads.scan.scan_heads as `sparsescope heads` runs it, including its
repeated-random-token induction pass (shrunk to one 2 x 32-token sequence here, and not counted as tokens,
so the figure is slightly pessimistic). Runs are interleaved so drift in machine load hits both; the best of
each is kept. Prints one JSON line:
{"bench": "heads", "tokens_per_s": ..., "bare_tokens_per_s": ..., "ratio": ..., "ok": ...}   (target: ratio >= 0.7)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="16 contexts (2 batches), 2 rounds: under a minute on an idle machine")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    from analysis.corpora import add_corpus
    from analysis.heads.scan import HeadScanConfig, scan_heads
    from sae.models import load_model
    from store import connect
    from store.corpora import context_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = 2048 if args.quick else args.tokens
    model = load_model(args.model)
    con = connect(":memory:")
    corpus = add_corpus(con, "bench", "builtin", args.model, tokens=tokens)
    ids = torch.tensor(context_tokens(con, "bench", 0, corpus.n_contexts))
    n_layers = model.cfg.n_layers
    config = HeadScanConfig(tokens=ids.numel(), batch=args.batch, random_seqs=1, random_half=32)

    def touch_pattern(pattern, hook) -> None:  # a hook returning a value would replace the activation
        pattern.data_ptr()
    touch = [(f"blocks.{layer}.attn.hook_pattern", touch_pattern) for layer in range(n_layers)]

    def bare() -> float:
        start = time.perf_counter()
        with model.hooks(fwd_hooks=touch), torch.inference_mode():
            for lo in range(0, len(ids), args.batch):
                model(ids[lo:lo + args.batch], stop_at_layer=n_layers)
        return time.perf_counter() - start

    def scan() -> float:
        start = time.perf_counter()
        scan_heads(model, ids, list(range(len(ids))), config, progress=False)
        return time.perf_counter() - start

    with torch.inference_mode():
        model(ids[:1], stop_at_layer=n_layers)  # warm-up
    t_bare, t_scan = [], []
    for _ in range(2):
        t_bare.append(bare())
        t_scan.append(scan())
    n_tok = ids.numel()
    best_bare, best_scan = min(t_bare), min(t_scan)
    print(json.dumps({"bench": "heads", "model": args.model, "tokens": n_tok, "threads": torch.get_num_threads(),
                      "tokens_per_s": round(n_tok / best_scan, 1), "bare_tokens_per_s": round(n_tok / best_bare, 1),
                      "ratio": round(best_bare / best_scan, 3), "load_avg_1min": round(os.getloadavg()[0], 1),
                      "ok": bool(best_bare / best_scan >= 0.7)}))


if __name__ == "__main__":
    main()
