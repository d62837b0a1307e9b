"""Activation-cache throughput vs a bare `model(tokens, stop_at_layer=L+1)` loop on the same batches.

    python bench/activations.py [--quick] [--model M] [--hook H] [--tokens N]

Prints one JSON line: {"bench": "activations", "tokens_per_s": ..., "bare_tokens_per_s": ..., "ratio": ...}
(target: ratio >= 0.8). Both are measured in this process, interleaved, so machine noise hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="~16k tokens, well under a minute")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--hook", default="blocks.6.hook_resid_post")
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    tokens = 16_384 if args.quick else args.tokens

    import torch

    from analysis.corpora import add_corpus
    from sae.activations import Manifest, write_cache
    from sae.models import load_model, stop_layer
    from store import connect
    from store.corpora import context_tokens

    model = load_model(args.model)
    con = connect(":memory:")
    corpus = add_corpus(con, "bench", "builtin", args.model, tokens=tokens)
    n = corpus.n_contexts
    stop_at = stop_layer(model, args.hook)
    tokens_of = lambda lo, hi: context_tokens(con, "bench", lo, hi)  # noqa: E731
    batches = [torch.tensor(tokens_of(lo, min(lo + args.batch, n))) for lo in range(0, n, args.batch)]
    with torch.inference_mode():
        model(batches[0], stop_at_layer=stop_at)  # warm-up

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for ids in batches:
                model(ids, stop_at_layer=stop_at)
        return time.perf_counter() - start

    def cached() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            want = Manifest(model=args.model, hook=args.hook, corpus="bench", d=model.cfg.d_model,
                            ctx=corpus.ctx, n_contexts=n)
            start = time.perf_counter()
            write_cache(model, args.hook, Path(tmp) / "c", tokens_of, want, batch=args.batch, progress=False)
            return time.perf_counter() - start

    t_bare, t_cache = [], []
    for _ in range(2):  # interleave so drift in machine load hits both
        t_bare.append(bare())
        t_cache.append(cached())
    n_tok = n * corpus.ctx
    best_bare, best_cache = min(t_bare), min(t_cache)
    print(json.dumps({"bench": "activations", "model": args.model, "hook": args.hook, "tokens": n_tok,
                      "tokens_per_s": round(n_tok / best_cache, 1), "bare_tokens_per_s": round(n_tok / best_bare, 1),
                      "ratio": round(best_bare / best_cache, 3)}))


if __name__ == "__main__":
    main()
