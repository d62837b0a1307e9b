"""Latency of the feature page and of token search on a store the size of a real dictionary.

    python bench/feature_card.py [--quick] [--features 50000] [--examples 20]

Builds a DuckDB file in a temporary folder with synthetic results (tests/factories.py, the tests' builder:
50,000 features x 20 examples, 20 histogram bins, 20 logit rows, 20 neighbour rows each; 20,000 contexts
of 64 tokens; a 50,000-token vocabulary), reopens it read-only as the UI does, then times `feature_card`
for 200 random features and `search_by_top_token` for 50 random token strings. Prints one JSON line:
{"bench": "feature_card", "p95_ms": ..., "search_p95_ms": ..., "ok": ...}
(targets: p95 feature_card < 50 ms, search < 200 ms).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import connect  # noqa: E402
from store.features import write_feature_stats, write_vocab  # noqa: E402
from store.queries import feature_card, search_by_top_token  # noqa: E402
from tests.factories import synthetic_feature_tables  # noqa: E402  (the tests' builder, not a copy of it)

CTX_LEN, N_CONTEXTS, VOCAB, WINDOW = 64, 20_000, 50_000, 17


def _ints(values, kind=pa.int32()):
    return pa.array(values, kind)


def build(path: Path, n_feat: int, n_ex: int) -> float:
    rng = np.random.default_rng(0)
    con = connect(path)
    con.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                "VALUES ('bench', 'bench-model', 'synthetic', ?, false, ?, ?)",
                [CTX_LEN, N_CONTEXTS, CTX_LEN * N_CONTEXTS])
    ids = rng.integers(0, VOCAB, (N_CONTEXTS, CTX_LEN)).astype(np.int32)
    contexts = pa.table({"corpus": pa.array(["bench"] * N_CONTEXTS), "context_id": _ints(np.arange(N_CONTEXTS)),
                         "token_ids": pa.ListArray.from_arrays(
                             pa.array(np.arange(N_CONTEXTS + 1) * CTX_LEN, pa.int32()), ids.reshape(-1)),
                         "text": pa.array(["synthetic"] * N_CONTEXTS)})
    con.register("_contexts", contexts)
    con.execute("INSERT INTO contexts SELECT * FROM _contexts")
    con.unregister("_contexts")
    vocab = [f"tok{i}" for i in range(VOCAB)]
    write_vocab(con, "bench-model", vocab)
    # n_ex examples a feature: half top, half one per quantile band; no dead features, so every card is full
    tables = synthetic_feature_tables(n_feat, seed=0, n_top=n_ex // 2, n_bands=n_ex - n_ex // 2, per_band=1,
                                      dead_every=0, vocab=vocab, corpus="bench", n_contexts=N_CONTEXTS,
                                      ctx_len=CTX_LEN, window=WINDOW, n_tokens=CTX_LEN * N_CONTEXTS)
    start = time.perf_counter()
    write_feature_stats(con, "bench-dict", "bench", tables, n_tokens=CTX_LEN * N_CONTEXTS)
    write_s = time.perf_counter() - start
    con.close()
    return write_s


def p95_ms(times: list[float]) -> float:
    return round(float(np.percentile(np.array(times) * 1000, 95)), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed lookups (same store size)")
    parser.add_argument("--features", type=int, default=50_000)
    parser.add_argument("--examples", type=int, default=20)
    args = parser.parse_args()
    n_cards, n_search = (100, 30) if args.quick else (200, 50)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        write_s = build(path, args.features, args.examples)
        build_s = time.perf_counter() - t0
        con = connect(path, read_only=True)
        rng = np.random.default_rng(1)
        feature_card(con, "bench-dict", 0)  # warm-up: first query loads metadata
        card_times, search_times = [], []
        for f in rng.integers(0, args.features, n_cards).tolist():
            t0 = time.perf_counter()
            card = feature_card(con, "bench-dict", f)
            card_times.append(time.perf_counter() - t0)
            assert len(card.top_examples) + len(card.quantile_examples) == args.examples
        for t in rng.integers(0, VOCAB, n_search).tolist():
            t0 = time.perf_counter()
            search_by_top_token(con, "bench-dict", f"tok{t}", 20)
            search_times.append(time.perf_counter() - t0)
        con.close()
    p95, search_p95 = p95_ms(card_times), p95_ms(search_times)
    print(json.dumps({"bench": "feature_card", "p95_ms": p95, "search_p95_ms": search_p95,
                      "median_ms": round(float(np.median(card_times) * 1000), 2),
                      "features": args.features, "examples_per_feature": args.examples,
                      "write_s": round(write_s, 2), "build_s": round(build_s, 2),
                      "ok": bool(p95 < 50 and search_p95 < 200)}))


if __name__ == "__main__":
    main()
