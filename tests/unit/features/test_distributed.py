"""Accumulators filled on two gloo processes and merged into rank 0 equal one process's, field by field."""
from __future__ import annotations

import pickle

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from analysis.features.distributed import merge_into_rank0, share
from analysis.features.pursuit import MPStatsConfig, MPStepAccumulator
from analysis.features.stats import FeatureStatsAccumulator, StatsConfig

D_SAE, N_CTX, CTX_LEN, K = 40, 24, 12, 4
CFG = StatsConfig(n_examples=4, n_quantiles=3, window=2, n_cooc=5, skip_first=1)
MP_CFG = MPStatsConfig(n_parents=3, dense_max_d_sae=0)  # the sparse pair counter, gathered across ranks


def data():
    g = torch.Generator().manual_seed(3)
    fires = torch.rand(N_CTX, CTX_LEN, D_SAE, generator=g) < 0.15
    acts = torch.where(fires, torch.rand(N_CTX, CTX_LEN, D_SAE, generator=g), torch.zeros(()))
    acts[5, 3, 2] = acts[17, 4, 2] = 5.0  # a tie across the two ranks' shares
    atoms = torch.randint(0, D_SAE, (N_CTX, K), generator=g)
    return acts, atoms


def feed(contexts: range):
    acts, atoms = data()
    stats, steps = FeatureStatsAccumulator(D_SAE, CFG), MPStepAccumulator(D_SAE, K, MP_CFG)
    for lo in range(contexts.start, contexts.stop, 5):
        hi = min(lo + 5, contexts.stop)
        stats.update(acts[lo:hi], torch.arange(lo, hi))
        steps.update(atoms[lo:hi], torch.full((hi - lo,), K))
    return stats, steps


def summary(stats: FeatureStatsAccumulator, steps: MPStepAccumulator) -> dict:
    out = stats.finish()
    fields = {name: getattr(out, name) for name in ("count", "max_act", "hist_count", "hist_lo", "cooc_ids",
                                                       "cooc_jaccard")}
    for kind in ("top", "quantiles"):
        ex = getattr(out, kind)
        fields.update({f"{kind}_{f}": getattr(ex, f) for f in ("activation", "context_id", "position", "windows")})
    m = steps.finish()
    return fields | {"n_tokens": out.n_tokens, "mean_act": out.mean_act, "steps": m.step_counts,
                     "parents": m.parent_ids, "parent_counts": m.parent_counts}


def rank_main(rank: int, world: int, init: str, result: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        stats, steps = feed(share(N_CTX, rank, world, 5))
        merge_into_rank0(stats, steps)
        if rank == 0:
            with open(result, "wb") as handle:
                pickle.dump(summary(stats, steps), handle)
    finally:
        dist.destroy_process_group()


def test_merged_accumulators_equal_one_process(tmp_path):
    single = summary(*feed(range(N_CTX)))
    result = tmp_path / "merged.pkl"
    mp.spawn(rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(result)), nprocs=2)
    merged = pickle.loads(result.read_bytes())
    assert merged.keys() == single.keys()
    for name, value in single.items():
        if name == "mean_act":  # float64 sums added in another order
            np.testing.assert_allclose(merged[name], value, rtol=1e-12)
        else:
            np.testing.assert_array_equal(merged[name], value, err_msg=name)
    assert merged["top_context_id"][2, 0] == 5  # the tie goes to the earlier token, as in one process


def test_shares_are_whole_batches_in_order():
    for n in (0, 1, 7, 16, 33):
        for world in (1, 2, 3):
            parts = [share(n, r, world, 4) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert all(p.start % 4 == 0 for p in parts)
