"""Throughput of FeatureStatsAccumulator.update vs a plain `acts = x @ W_enc` encode of the same batches.

    python bench/analyze_update.py [--quick] [--d-sae 4608] [--d-in 576] [--k 32] [--batches N]

TopK-like activations (k firings per token, per-feature biases so densities are skewed as in trained
dictionaries), 128-token contexts. Prints one JSON line:
{"bench": "analyze_update", "tokens_per_s": ..., "steady_tokens_per_s": ..., "encode_tokens_per_s": ...,
 "overhead_vs_encode": ..., "steady_overhead_vs_encode": ..., "band_fill": ...}
overhead = update time / encode time over the whole run (first batches fill the tables and cost most);
steady = the second half of the run. band_fill = filled quantile slots / min(n_examples, band size).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="12 batches of 4096 tokens")
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--ctx-len", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=32, help="contexts per batch")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    n_batches = 12 if args.quick else args.batches

    import torch

    from analysis.features.stats import FeatureStatsAccumulator, StatsConfig

    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    dev = torch.device(args.device)
    w_enc = (torch.randn(args.d_in, args.d_sae, generator=g) / args.d_in ** 0.5).to(dev)
    b_enc = (torch.randn(args.d_sae, generator=g) * 0.5).to(dev)  # skews densities across features
    acc = FeatureStatsAccumulator(args.d_sae, StatsConfig(), device=dev)
    n_tok = args.n_ctx * args.ctx_len
    encode_s, update_s, fired = [], [], []

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for b in range(n_batches):
        x = torch.randn(n_tok, args.d_in, generator=g).to(dev)
        sync()
        t0 = time.perf_counter()
        pre = x @ w_enc  # the reference: a bare encode matmul
        sync()
        encode_s.append(time.perf_counter() - t0)
        vals, idx = torch.topk(pre + b_enc, args.k, dim=1)
        acts = torch.zeros_like(pre).scatter_(1, idx, vals.relu()).view(args.n_ctx, args.ctx_len, -1)
        nz = acts.view(n_tok, -1).nonzero(as_tuple=True)[1]
        fired.append((nz.cpu(), acts.view(n_tok, -1)[acts.view(n_tok, -1) > 0].cpu()))
        sync()
        t0 = time.perf_counter()
        acc.update(acts, torch.arange(b * args.n_ctx, (b + 1) * args.n_ctx))
        sync()
        update_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    stats = acc.finish()
    finish_s = time.perf_counter() - t0
    print(json.dumps(_line(args, dev, n_batches * n_tok, update_s, encode_s, finish_s,
                           _band_fill(stats, fired))))


def _band_fill(stats, fired) -> float:
    """Filled quantile slots / the most a band could hold (min(N, firings in the band)), by brute force."""
    import numpy as np
    import torch

    from analysis.features.examples import band_index

    feature = torch.cat([f for f, _ in fired]).numpy()
    value = torch.cat([v for _, v in fired]).numpy()
    q, n = stats.quantiles.context_id.shape[1:]
    band = band_index(value, stats.max_act[feature], q)
    size = np.bincount(feature * q + band, minlength=len(stats.count) * q)
    possible = np.minimum(size, n).sum()
    return float((stats.quantiles.context_id >= 0).sum() / max(possible, 1))


def _line(args, dev, tokens, update_s, encode_s, finish_s, band_fill) -> dict:
    half = len(update_s) // 2
    n_tok = tokens // len(update_s)
    return {
        "bench": "analyze_update", "device": str(dev), "d_sae": args.d_sae, "k": args.k,
        "threads": __import__("torch").get_num_threads(), "tokens": tokens,
        "tokens_per_s": round(tokens / sum(update_s)),
        "steady_tokens_per_s": round((len(update_s) - half) * n_tok / sum(update_s[half:])),
        "encode_tokens_per_s": round(tokens / sum(encode_s)),
        "overhead_vs_encode": round(sum(update_s) / sum(encode_s), 3),
        "steady_overhead_vs_encode": round(sum(update_s[half:]) / sum(encode_s[half:]), 3),
        "finish_s": round(finish_s, 2),
        "band_fill": round(band_fill, 3),
    }


if __name__ == "__main__":
    main()
