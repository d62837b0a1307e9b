"""Analysis of a 65,536-feature dictionary with every statistic: time against a bare encode, peak memory, store
size and feature-page latency, in one run.

    python bench/scale.py [--quick] [--workspace DIR] [--tokens N] [--d-sae N] [--k K] [--model M] [--hook H]

Setup (kept in the workspace, reused by later runs): an activation cache of the built-in corpus at the hook,
and a TopK dictionary trained for a few steps on it. Then, on one CPU thread:
  encode    the dictionary's bare encode of the analysed tokens, read from the cache, timed before and after the
            analysis (encode_seconds is the mean: the machine may be shared, so the two bracket its load)
  analysis  `sparsescope analyze` on the same tokens, from the cache, in a child process; its peak RSS is the
            kernel's high-water mark of that process (VmHWM: ru_maxrss would also count the parent, whose
            memory a child inherits across fork and exec); it writes into a compacted copy of the store without
            feature results, so store_mb is one analysis' store
  page      feature_card (the feature page's queries) for random live features on the store opened read-only
Prints one JSON line: {"bench": "scale", "features", "tokens", "seconds", "encode_seconds", "forward_seconds",
"peak_rss_gb", "store_mb", "cooccurrence", "feature_page_p95_ms", "phases", "cpu_ratio", "load_avg", "ok"}; ok:
co-occurrence stored, peak_rss_gb < 4, seconds <= 1.5 x encode_seconds + forward_seconds, store_mb < 1500,
feature_page_p95_ms < 100 (cpu_ratio, the same ratio in CPU seconds, is less sensitive to other processes).
Full: SmolLM2-135M at blocks.6.hook_resid_post, 200k tokens, 65,536 features; --quick: the tiny random model, 8k
tokens, 16,384 features (under a minute once its workspace exists; at that size the d_sae^2 decoder-neighbour
search outweighs encoding 8k tokens, so its time target is not expected to hold).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")



def dictionary_name(args) -> str:
    return f"scale-topk-{args.d_sae}"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny random model, 8k tokens")
    parser.add_argument("--workspace", help="default: /tmp/sparsescope-scale[-quick]")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--d-sae", type=int, help="default 65,536 (--quick: 16,384)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--model")
    parser.add_argument("--hook")
    parser.add_argument("--pages", type=int, default=200, help="feature pages timed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.model = args.model or ("tiny-random" if quick else "smollm2-135m-instruct")
    args.hook = args.hook or ("blocks.0.hook_resid_post" if quick else "blocks.6.hook_resid_post")
    args.tokens = args.tokens or (8_192 if quick else 200_000)
    args.d_sae = args.d_sae or (16_384 if quick else 65_536)
    args.workspace = Path(args.workspace or f"/tmp/sparsescope-scale{'-quick' if quick else ''}")
    args.pages = min(args.pages, 50) if quick else args.pages
    return args


def setup(args) -> Path:
    """The cache and the dictionary (reused when present); returns the store copy taken before any analysis."""
    from analysis.activations import build_cache
    from analysis.training import TrainRequest, train_dictionary
    from sae.models import load_model
    from store import Workspace, session
    from store.dictionaries import get_dictionary

    ws, name = Workspace.resolve(args.workspace), dictionary_name(args)
    base = ws.root / f"before-analysis-{name}.duckdb"
    with session(ws.db_path) as con:
        if get_dictionary(con, name) is not None and base.exists() and _cache_usable(con, args):
            return base
        lm = load_model(args.model, device="cpu")  # build_cache rebuilds a cache the analysis could not use
        cache = build_cache(ws, con, lm, args.hook, "builtin", args.tokens, progress=not args.quick)
        if get_dictionary(con, name) is None:
            train_dictionary(ws, con, TrainRequest(arch="topk", activations=cache.path.name, name=name,
                                                   d_sae=args.d_sae, k=args.k, tokens=3 * 4096, batch=4096,
                                                   lr=1e-3, device="cpu"), lm=lm, progress=False)
    _results_free_copy(ws.db_path, base)
    return base


def _cache_usable(con, args) -> bool:
    """Whether the analysis will read the cache (a cache made before the corpus it caches changed is not used)."""
    from analysis.features.analyze import _covering_cache
    from store.corpora import get_corpus

    corpus = get_corpus(con, "builtin")
    if corpus is None:
        return False
    n_contexts = min(-(-args.tokens // corpus.ctx), corpus.n_contexts)
    return _covering_cache(con, args.model, args.hook, corpus.name, n_contexts)[0] is not None


def _results_free_copy(db: Path, dst: Path) -> None:
    """dst: the store without any feature results, compacted (a copy of a store whose results were deleted would
    keep their blocks), so the store after one analysis is that analysis' store."""
    import duckdb

    from store import connect
    from store.features import delete_feature_stats
    from store.queries import analysed_dictionaries

    scratch = dst.with_suffix(".scratch")
    shutil.copy(db, scratch)
    con = connect(scratch)
    for name, _, _ in analysed_dictionaries(con):
        delete_feature_stats(con, name)
    con.close()
    dst.unlink(missing_ok=True)
    con = duckdb.connect()
    con.execute("ATTACH ? AS src (READ_ONLY)", [str(scratch)])
    con.execute("ATTACH ? AS dst", [str(dst)])
    con.execute("COPY FROM DATABASE src TO dst")
    con.close()
    scratch.unlink()


def encode_seconds(args) -> tuple[float, float]:
    """(wall, CPU) seconds of the bare encode of the analysed contexts (as many at a time as the analysis)."""
    import torch

    from analysis.dictionaries import open_dictionary
    from analysis.features.analyze import AnalyzeRequest, contexts_per_batch
    from sae.activation_reader import ActivationReader
    from store import Workspace, session
    from store.models import list_caches

    ws = Workspace.resolve(args.workspace)
    _, sae = open_dictionary(ws, dictionary_name(args), "cpu")
    with session(ws.db_path, read_only=True) as con:
        cache = next(c for c in list_caches(con) if c.hook == args.hook and c.model == args.model)
    reader = ActivationReader(cache.path)
    n_contexts = -(-args.tokens // reader.manifest.ctx)
    batch = contexts_per_batch(AnalyzeRequest(dictionary_name(args)).batch, reader.manifest.ctx, sae.cfg.d_sae)
    wall = cpu = 0.0
    with torch.no_grad():
        for _, acts in reader.contexts(n_contexts):
            for chunk in acts.split(batch):
                x = chunk.reshape(-1, chunk.shape[-1]).float()
                t, c = time.perf_counter(), time.process_time()
                sae.encode(x)
                wall, cpu = wall + time.perf_counter() - t, cpu + time.process_time() - c
    return wall, cpu


def child(args) -> None:
    """The analysis alone in this process (its peak RSS is the analysis'), with the time of its phases."""
    import torch

    torch.set_num_threads(1)
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from store import Workspace

    phases = _time_phases()
    t, c = time.perf_counter(), time.process_time()
    out = analyze_dictionary(Workspace.resolve(args.workspace),
                             AnalyzeRequest(dictionary_name(args), tokens=args.tokens), progress=False)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    phases["pass"] = seconds - sum(phases.values())
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "n_tokens": out.n_tokens, "source": out.source,
                      "phases": {k: round(v, 1) for k, v in phases.items()}, "peak_rss_kb": int(hwm.split()[1])}))


def _time_phases() -> dict[str, float]:
    """Wrap the analysis' steps (looked up at call time) so each one's seconds add up in the returned dict."""
    import analysis.features.analyze as analyze
    import analysis.features.stats as stats
    import analysis.features.tables as tables
    import analysis.features.weights as weights
    import store.features as store_features

    phases: dict[str, float] = {}

    def timed(owner, attr: str, phase: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t

        setattr(owner, attr, wrapper)

    for owner, attr, phase in ((analyze, "open_site", "open"), (stats.FeatureStatsAccumulator, "finish", "finish"),
                               (weights, "decoder_neighbors", "neighbors"), (weights, "logit_effects", "logits"),
                               (tables, "feature_tables", "tables"), (store_features, "write_feature_stats", "write")):
        timed(owner, attr, phase)
    return phases


def run_analysis(args, base: Path) -> dict:
    from store import Workspace

    ws = Workspace.resolve(args.workspace)
    shutil.copy(base, ws.db_path)  # a store without earlier results: store_mb is this analysis' store
    cmd = [sys.executable, __file__, "--child", "--workspace", str(args.workspace), "--tokens", str(args.tokens),
           "--model", args.model, "--hook", args.hook, "--d-sae", str(args.d_sae)] + (["--quick"] if args.quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"analysis failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["store_mb"] = ws.db_path.stat().st_size / 2 ** 20
    return out


def page_p95_ms(args, n: int) -> tuple[float, bool]:
    """p95 of feature_card over n random live features, and whether co-occurrence was stored."""
    import numpy as np

    from store import Workspace, connect
    from store.queries import feature_card

    name = dictionary_name(args)
    con = connect(Workspace.resolve(args.workspace).db_path, read_only=True)
    live = [r[0] for r in con.execute("SELECT feature FROM features WHERE dictionary = ? AND count > 0",
                                      [name]).fetchall()]
    config = json.loads(con.execute("SELECT config FROM analyses WHERE dictionary = ?", [name]).fetchone()[0])
    n_cooc = con.execute("SELECT count(*) FROM feature_neighbors WHERE dictionary = ? AND kind = 'cooccurrence'",
                         [name]).fetchone()[0]
    rng = np.random.default_rng(0)
    feature_card(con, name, live[0])  # the first query loads metadata
    times = []
    for f in rng.choice(live, size=min(n, len(live)), replace=False).tolist():
        t = time.perf_counter()
        feature_card(con, name, f)
        times.append(time.perf_counter() - t)
    con.close()
    return float(np.percentile(np.array(times) * 1000, 95)), bool(config.get("cooccurrence")) and n_cooc > 0


def _note(text: str) -> None:
    """Progress on stderr (a full run takes tens of minutes); stdout carries the JSON line only."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    args = parse()
    if args.child:
        return child(args)
    import torch

    torch.set_num_threads(1)
    base = setup(args)
    before = encode_seconds(args)
    _note(f"bare encode: {before[0]:.1f} s")
    analysis = run_analysis(args, base)
    _note(f"analysis: {analysis['seconds']:.1f} s")
    after = encode_seconds(args)
    _note(f"bare encode again: {after[0]:.1f} s")
    encode_s, encode_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    p95, cooc = page_p95_ms(args, args.pages)
    if not analysis["source"].startswith("cache"):
        raise SystemExit(f"the analysis ran the model ({analysis['source']}) instead of reading the cache; "
                         f"delete {args.workspace} and run again")
    forward_s = 0.0  # the analysed tokens come from the cache
    peak_gb = analysis["peak_rss_kb"] / 2 ** 20
    line = {"bench": "scale", "features": args.d_sae, "tokens": args.tokens, "analysed_tokens": analysis["n_tokens"],
            "seconds": round(analysis["seconds"], 1), "encode_seconds": round(encode_s, 1),
            "encode_seconds_before_after": [round(before[0], 1), round(after[0], 1)],
            "forward_seconds": forward_s, "ratio": round(analysis["seconds"] / encode_s, 3),
            "cpu_ratio": round(analysis["cpu_seconds"] / encode_cpu, 3),
            "peak_rss_gb": round(peak_gb, 2), "store_mb": round(analysis["store_mb"], 1),
            "base_store_mb": round(base.stat().st_size / 2 ** 20, 1), "cooccurrence": cooc,
            "feature_page_p95_ms": round(p95, 1), "phases": analysis["phases"],
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "model": args.model, "hook": args.hook, "k": args.k}
    line["ok"] = bool(cooc and peak_gb < 4 and analysis["seconds"] <= 1.5 * encode_s + forward_s
                      and analysis["store_mb"] < 1500 and p95 < 100)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
