"""GBA after one pass over an activation cache, next to TopK at the same L0, in one run.

Trains GBA with two seeds, then TopK with two seeds at k = GBA's measured L0 (rounded), each through the
training API (sae.training.train, what `sparsescope train` runs) for one pass over the cache's training rows.
Prints one JSON line:
  within_1_5x    per GBA seed: share of features whose frequency over all the training rows, measured with the
                 trained dictionary, is <= 1.5 x their group's target
  within_1_5x_by_group  the same share for seed 0, per group (most frequent target first)
  dead           per GBA seed: share of features that never fire on the training rows
  l0, fvu        per architecture, on the held-out rows (FVU: sum ||x - x_hat||^2 / sum ||x - mean||^2)
  fvu_ratio      GBA's FVU / TopK's
  seed_match     per architecture: share of seed 0's features whose best match among seed 1's decoder rows has
                 cosine > 0.9
Without --activations (or when the folder is missing) it says so and uses synthetic sparse data; --quick does
that with 512 features.

    OMP_NUM_THREADS=1 python bench/gba.py --activations WORKSPACE/activations/NAME [--d-sae 2304] [--quick]
(targets, `ok`: within_1_5x >= 0.95 and dead <= 0.05 for both seeds, fvu_ratio <= 1.1)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sae.dictionaries import DictSpec
from sae.sources import CacheSource, FileSource
from sae.training import TrainConfig, train


def synthetic_source(folder: Path) -> FileSource:
    """Sparse combinations of random directions (tests/factories.py's recipe, wider), as a .npy file."""
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(512, 64, generator=g), dim=-1)
    codes = (torch.rand(100_000, 512, generator=g) < 0.02) * torch.rand(100_000, 512, generator=g) * 4
    path = folder / "synthetic.npy"
    np.save(path, (codes @ atoms + 0.02 * torch.randn(100_000, 64, generator=g) + 1.0).numpy())
    return FileSource(path)


def run(source, arch: str, d_sae: int, k: int | None, seed: int, args, options=()) -> tuple:
    spec = DictSpec.with_defaults(arch, source.d_in, d_sae, k, options=options)
    config = TrainConfig(arch=arch, d_sae=d_sae, k=spec.k, tokens=source.n_train, batch=args.batch, lr=args.lr,
                         seed=seed, checkpoint_every=0, device="cpu")
    started = time.perf_counter()
    result = train(spec, config, source, progress=False)
    print(f"{arch} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return result.sae, result.state.scale


@torch.no_grad()
def measure(sae, scale: float, rows: torch.Tensor) -> dict:
    x = rows.float() * scale
    acts = sae.encode(x)
    x_hat = sae.decode(acts)
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum())
    return {"l0": float((acts > 0).sum(dim=-1).float().mean()), "fvu": round(fvu, 4)}


@torch.no_grad()
def frequencies(sae, scale: float, source) -> torch.Tensor:
    fired, n = torch.zeros(sae.cfg.d_sae), 0
    for index in range(len(source.chunk_rows)):
        rows = source.chunk(index).float() * scale
        for lo in range(0, rows.shape[0], 8192):
            fired += (sae.encode(rows[lo:lo + 8192]) > 0).sum(dim=0)
        n += rows.shape[0]
    return fired / n


def seed_match(a, b) -> float:
    wa = torch.nn.functional.normalize(a.W_dec.detach(), dim=-1)
    wb = torch.nn.functional.normalize(b.W_dec.detach(), dim=-1)
    return round(float(((wa @ wb.T).amax(dim=1) > 0.9).float().mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", type=Path, default=None, help="activation cache folder")
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--update-every", type=int, default=1, help="GBA's update_every (steps)")
    parser.add_argument("--gamma", type=float, default=0.1, help="GBA's gamma (bias step)")
    parser.add_argument("--min-fires", type=float, default=16.0,
                        help="GBA's min_fires (expected firings a group's frequency is counted over)")
    parser.add_argument("--quick", action="store_true", help="synthetic data, 512 features")
    args = parser.parse_args()
    if args.quick:
        args.activations, args.d_sae = None, 512
    torch.set_num_threads(1)
    started = time.perf_counter()
    note = None
    if args.activations is not None and (args.activations / "manifest.json").is_file():
        source = CacheSource(args.activations)
        data = args.activations.name
    else:
        import tempfile

        note = f"no activation cache at {args.activations}: synthetic sparse data instead"
        source, data = synthetic_source(Path(tempfile.mkdtemp())), "synthetic"
    options = (("update_every", args.update_every), ("gamma", args.gamma), ("min_fires", args.min_fires))
    held_out = source.held_out_rows()
    gba = [run(source, "gba", args.d_sae, None, seed, args, options) for seed in (0, 1)]
    gba_numbers = measure(*gba[0], held_out)
    freqs = [frequencies(*trained, source) for trained in gba]
    target = gba[0][0].target
    within_seeds = [round(float((freq <= 1.5 * target).float().mean()), 4) for freq in freqs]
    dead_seeds = [round(float((freq == 0).float().mean()), 4) for freq in freqs]
    group = gba[0][0].group
    by_group = [round(float((freqs[0][group == g] <= 1.5 * target[group == g]).float().mean()), 3)
                for g in range(int(group.max()) + 1)]
    k = max(1, round(gba_numbers["l0"]))
    topk = [run(source, "topk", args.d_sae, k, seed, args) for seed in (0, 1)]
    topk_numbers = measure(*topk[0], held_out)
    within, dead = min(within_seeds), max(dead_seeds)
    fvu_ratio = gba_numbers["fvu"] / topk_numbers["fvu"]
    print(json.dumps({
        "data": data, "note": note, "train_rows": source.n_train, "held_out_rows": int(held_out.shape[0]),
        "d_in": source.d_in, "d_sae": args.d_sae, "batch": args.batch, "lr": args.lr,
        "gba_update_every": args.update_every, "gba_gamma": args.gamma,
        "gba_min_fires": args.min_fires,
        "within_1_5x": within_seeds, "dead": dead_seeds, "within_1_5x_by_group": by_group,
        "gba": {**gba_numbers, "l0": round(gba_numbers["l0"], 2), "seed_match": seed_match(gba[0][0], gba[1][0])},
        "topk": {**topk_numbers, "k": k, "l0": round(topk_numbers["l0"], 2),
                 "seed_match": seed_match(topk[0][0], topk[1][0])},
        "fvu_ratio": round(fvu_ratio, 3), "ok": within >= 0.95 and dead <= 0.05 and fvu_ratio <= 1.1,
        "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
