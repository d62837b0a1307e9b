"""Speed of `sparsescope explain` and of searching explanations, on synthetic stores.

    python bench/explain.py [--quick] [--features 4608]

Explain: a DuckDB file with one analysed dictionary of 4,608 features shaped like the demo's (tests/factories.py's
synthetic_feature_tables: 20 top + 10 bands x 5 examples of 17 tokens per feature, every 17th feature dead) on a
corpus of 20,000 contexts x 64 tokens, where every example's firing token is its feature's own token. Times, per
live feature, reading the evidence, the `patterns` explainer and each scorer (with its baseline, so two scorings a
feature), and the whole `run_explain` end to end (target: every live feature in under 2 minutes). The `llm`
explainer and the judges (`detection-llm`, `fuzz`) are timed the same way on --llm-features live features against
tests/chat_server.py's canned server on a local port: the client, prompts, parsing and HTTP round trips, not a
model's speed (`*_canned` keys).

Search: 3 dictionaries x 65,536 features, each with a patterns-like explanation and 1% with a label, searched
for one or two words (p95 target < 100 ms).

Prints one JSON line: {"bench": "explain", "features_per_min": {...}, "end_to_end_s": ..., "search_p95_ms": ...,
"ok": ...}. --quick: the same stores, fewer timed searches and the stage timings on a quarter of the features.
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

from analysis.explain.chat import ChatOptions, open_chat  # noqa: E402
from analysis.explain.evidence import EvidenceReader  # noqa: E402
from analysis.explain.registry import Tools, explainer, scorer  # noqa: E402
from analysis.explain.run import BATCH, ExplainRequest, run_explain, score_batch  # noqa: E402
from store import connect  # noqa: E402
from store.explanations import ExplanationRow, search_explanations, write_batch  # noqa: E402
from store.features import write_feature_stats, write_vocab  # noqa: E402
from tests.chat_server import CannedChatServer  # noqa: E402
from tests.factories import synthetic_feature_tables  # noqa: E402  (the tests' builder, not a copy of it)

CTX_LEN, N_CONTEXTS, VOCAB, WINDOW = 64, 20_000, 50_000, 17
SEARCH_DICTS, SEARCH_FEATURES = 3, 65_536


def build_analysed(path: Path, n_feat: int) -> None:
    rng = np.random.default_rng(0)
    tables = synthetic_feature_tables(n_feat, seed=0, vocab=[f"tok{i}" for i in range(VOCAB)], corpus="bench",
                                      n_contexts=N_CONTEXTS, ctx_len=CTX_LEN, window=WINDOW,
                                      n_tokens=CTX_LEN * N_CONTEXTS)
    ids = rng.integers(0, VOCAB, (N_CONTEXTS, CTX_LEN)).astype(np.int32)
    examples = tables["feature_examples"]
    feature = examples["feature"].to_numpy()
    # plant each feature's token where its examples fire, so the explainer finds patterns as on a real dictionary
    ids[examples["context_id"].to_numpy(), examples["position"].to_numpy()] = 1000 + feature % (VOCAB - 1000)
    con = connect(path)
    con.execute("INSERT INTO corpora (name, model, source, ctx, bos, n_contexts, n_tokens) "
                "VALUES ('bench', 'bench-model', 'synthetic', ?, false, ?, ?)",
                [CTX_LEN, N_CONTEXTS, CTX_LEN * N_CONTEXTS])
    con.register("_contexts", pa.table({
        "context_id": pa.array(np.arange(N_CONTEXTS), pa.int32()),
        "token_ids": pa.ListArray.from_arrays(pa.array(np.arange(N_CONTEXTS + 1) * CTX_LEN, pa.int32()),
                                              ids.reshape(-1))}))
    con.execute("INSERT INTO contexts SELECT 'bench', context_id, token_ids, '' FROM _contexts")
    con.unregister("_contexts")
    write_vocab(con, "bench-model", [f" w{i}" for i in range(VOCAB)])
    write_feature_stats(con, "bench-dict", "bench", tables, n_tokens=CTX_LEN * N_CONTEXTS)
    con.close()


def stage_rates(path: Path, n_stage: int) -> dict[str, float]:
    """Live features per minute of each stage, over the first n_stage live features, a batch at a time."""
    con = connect(path, read_only=True)
    live = [r[0] for r in con.execute("SELECT feature FROM features WHERE dictionary = 'bench-dict' AND count > 0 "
                                      "ORDER BY feature LIMIT ?", [n_stage]).fetchall()]
    reader = EvidenceReader(con, "bench-dict")
    patterns = explainer("patterns")
    seconds = {"read": 0.0, "patterns": 0.0, "detection": 0.0, "simulation": 0.0}
    for lo in range(0, len(live), BATCH):
        t0 = time.perf_counter()
        evidence = reader.read(con, live[lo:lo + BATCH])
        t1 = time.perf_counter()
        explained = {f: patterns.explain(ev) for f, ev in evidence.items()}
        seconds["read"] += t1 - t0
        seconds["patterns"] += time.perf_counter() - t1
        for name in ("detection", "simulation"):
            t0 = time.perf_counter()
            score_batch(evidence, explained, [scorer(name)], seed=0)
            seconds[name] += time.perf_counter() - t0
    con.close()
    return {name: round(len(live) / s * 60) for name, s in seconds.items()}


def llm_rates(path: Path, n_stage: int) -> dict[str, float]:
    """Live features per minute of the llm explainer and each judge (with its baseline) over the canned server."""
    con = connect(path, read_only=True)
    live = [r[0] for r in con.execute("SELECT feature FROM features WHERE dictionary = 'bench-dict' AND count > 0 "
                                      "ORDER BY feature LIMIT ?", [n_stage]).fetchall()]
    reader = EvidenceReader(con, "bench-dict")
    seconds = {"llm": 0.0, "detection-llm": 0.0, "fuzz": 0.0}
    with CannedChatServer() as server:
        chat = open_chat(ChatOptions(server.url, "canned"))
        tools = Tools(0, lambda: chat)
        llm = explainer("llm", tools)
        for lo in range(0, len(live), BATCH):
            evidence = reader.read(con, live[lo:lo + BATCH])
            t0 = time.perf_counter()
            explained = {f: llm.explain(ev) for f, ev in evidence.items()}
            seconds["llm"] += time.perf_counter() - t0
            for name in ("detection-llm", "fuzz"):
                t0 = time.perf_counter()
                score_batch(evidence, explained, [scorer(name, tools)], seed=0)
                seconds[name] += time.perf_counter() - t0
    con.close()
    return {f"{name}_canned": round(len(live) / s * 60) for name, s in seconds.items()}


WORDS = [f"{a}{b}" for a in ("par", "lon", "cat", "dog", "run", "sea", "red", "num", "code", "sky")
         for b in ("is", "don", "ch", "ger", "ning", "side", "dish", "ber", "word", "line")]


def build_search(path: Path) -> list[str]:
    """3 x 65,536 explanations of two to three words (from WORDS, 100 of them), 1% of features labelled."""
    rng = np.random.default_rng(1)
    con = connect(path)
    for d in range(SEARCH_DICTS):
        picks = rng.integers(0, len(WORDS), (SEARCH_FEATURES, 3))
        rows = [ExplanationRow(f, "patterns", f"' {WORDS[a]}', ' {WORDS[b]}' after ' {WORDS[c]}'; "
                                                f"{int(rng.integers(5, 100))}% of firings")
                for f, (a, b, c) in enumerate(picks.tolist())]
        write_batch(con, f"search-{d}", "patterns", rows, [], [], [])
        labelled = rng.choice(SEARCH_FEATURES, SEARCH_FEATURES // 100, replace=False)
        con.executemany("INSERT INTO feature_labels (dictionary, feature, label) VALUES (?, ?, ?)",
                        [[f"search-{d}", int(f), f"{WORDS[int(f) % len(WORDS)]} things"] for f in labelled])
    con.close()
    return WORDS


def search_times(path: Path, n: int) -> list[float]:
    rng = np.random.default_rng(2)
    con = connect(path, read_only=True)
    search_explanations(con, "warm up")
    times = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, 1 + i % 2).tolist()).upper()  # case must not matter
        t0 = time.perf_counter()
        hits = search_explanations(con, words, limit=20)
        times.append(time.perf_counter() - t0)
        assert hits, words
    con.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed searches, stages on a quarter")
    parser.add_argument("--features", type=int, default=4608)
    parser.add_argument("--llm-features", type=int, default=200, help="features for the canned llm timings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        analysed, searched = Path(tmp) / "explain.duckdb", Path(tmp) / "search.duckdb"
        t0 = time.perf_counter()
        build_analysed(analysed, args.features)
        build_search(searched)
        build_s = time.perf_counter() - t0
        rates = stage_rates(analysed, args.features // 4 if args.quick else args.features)
        rates |= llm_rates(analysed, args.llm_features // 4 if args.quick else args.llm_features)
        t0 = time.perf_counter()
        result = run_explain(analysed, ExplainRequest("bench-dict"))
        end_to_end = time.perf_counter() - t0
        times = search_times(searched, 20 if args.quick else 100)
    p95 = round(float(np.percentile(np.array(times) * 1000, 95)), 2)
    detection = result.summaries["detection"][1]
    print(json.dumps({"bench": "explain", "features": args.features, "live": len(result.plan.features),
                      "features_per_min": rates, "end_to_end_s": round(end_to_end, 2),
                      "detection_mean": round(detection.mean, 3),
                      "detection_baseline": round(detection.baseline_mean, 3),
                      "search_p95_ms": p95, "search_rows": SEARCH_DICTS * SEARCH_FEATURES,
                      "build_s": round(build_s, 2), "ok": bool(end_to_end < 120 and p95 < 100)}))


if __name__ == "__main__":
    main()
