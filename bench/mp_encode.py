"""Fast matching-pursuit encoder vs SAELens' MatchingPursuitSAE.encode, same weights and inputs, one run.

SAELens' encoder iterates up to max_iterations and stops on a residual threshold or a repeated atom; for an
apples-to-apples k-step comparison it is configured with max_iterations=k, residual_threshold=0 and
stop_on_duplicate_support=False, which makes it run exactly k steps (what MP-SAEs train with).

agreement: share of inputs whose atom sequence (the atom chosen at each step, in order) matches SAELens'.
SAELens' encode returns only summed codes, so its sequence comes from `reference_steps`, a transcription of
its loop that records the indices; the line reports whether that transcription reproduced SAELens' codes
bit for bit (`reference_exact`). code_agreement: same support, coefficients within 1e-4 relative.
speedup: SAELens time / ours with the Gram matrix cached (the inference case: one dictionary, many
batches); speedup_cold counts building the Gram matrix too (d_sae^2 d_in flops, once per dictionary).
Inputs are sparse combinations of atoms plus noise, like activations a trained dictionary explains, or
with --activations rows of an activation cache (e.g. smollm2 blocks.6.hook_resid_post), encoded with the
trained dictionary of --dictionary when given (its W_dec, b_dec and activation scale) or the random one.

    python bench/mp_encode.py [--quick] [--activations CACHE_DIR] [--dictionary DICT_DIR]
(targets: agreement >= 0.999, speedup >= 10)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE, MatchingPursuitSAEConfig

from sae.dictionaries import MPSAE, MPSAEConfig, mp_encode_steps


def make_inputs(W: torch.Tensor, n: int, active: int, generator: torch.Generator) -> torch.Tensor:
    """n inputs, each `active` random atoms with magnitudes ~ 1 + |N(0, 1)| plus isotropic noise."""
    atoms = torch.randint(W.shape[0], (n, active), generator=generator)
    magnitudes = 1 + torch.randn(n, active, generator=generator).abs()
    x = torch.einsum("na,nad->nd", magnitudes, W[atoms])
    return x + 0.3 * torch.randn(n, W.shape[1], generator=generator)


def cached_inputs(folder: Path, n: int) -> torch.Tensor:
    """The first n rows of an activation cache (shards in manifest order)."""
    from safetensors.torch import load_file

    manifest = json.loads((folder / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        rows.append(load_file(folder / shard["file"])["activations"][: n - sum(len(r) for r in rows)])
        if sum(len(r) for r in rows) >= n:
            break
    return torch.cat(rows).float()


def trained_weights(folder: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """W_dec, b_dec and the activation scale the dictionary was trained with (1 if none)."""
    from safetensors.torch import load_file

    weights = load_file(folder / "sae_weights.safetensors")
    cfg = json.loads((folder / "cfg.json").read_text())
    return weights["W_dec"].float(), weights["b_dec"].float(), cfg.get("metadata", {}).get("activation_scale") or 1.0


@torch.no_grad()
def reference_steps(sae_in: torch.Tensor, W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens' k-step loop (same ops, same order), also recording the atom of each step (-1: added 0)."""
    residual, ids = sae_in.clone(), []
    acts = torch.zeros(sae_in.shape[0], W.shape[0], dtype=sae_in.dtype)
    for _ in range(k):
        indices = (residual @ W.T).relu().max(dim=1, keepdim=True).indices
        selected = W[indices.squeeze(1)]
        values = (residual * selected).sum(dim=-1, keepdim=True).relu()
        acts.scatter_add_(1, indices, values)
        residual = residual - values * selected
        ids.append(torch.where(values.squeeze(1) > 0, indices.squeeze(1), -1))
    return torch.stack(ids, dim=1), acts


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs and repeats (under a minute)")
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--activations", type=Path, default=None, help="activation cache folder for real inputs")
    parser.add_argument("--dictionary", type=Path, default=None, help="trained MP dictionary folder (SAELens format)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = min(args.n, 2048) if args.quick else args.n
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(args.d_sae, args.d_in, generator=generator)
    W /= W.norm(dim=-1, keepdim=True)
    b_dec = 0.1 * torch.randn(args.d_in, generator=generator)
    scale = 1.0
    if args.dictionary:
        W, b_dec, scale = trained_weights(args.dictionary)
    if args.activations:
        x = cached_inputs(args.activations, n) * scale
        n = x.shape[0]
    else:
        x = make_inputs(W, n, args.k // 2, generator) + b_dec

    ours = MPSAE(MPSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k))
    ref = MatchingPursuitSAE(MatchingPursuitSAEConfig(d_in=args.d_in, d_sae=args.d_sae, max_iterations=args.k,
                                                      residual_threshold=0.0, stop_on_duplicate_support=False))
    for sae in (ours, ref):
        sae.load_state_dict({"W_dec": W, "b_dec": b_dec})

    def encode_cold() -> torch.Tensor:
        ours.__dict__.pop("_gram_cache", None)  # drop the cached Gram matrix
        return ours.encode(x)

    with torch.no_grad():
        cold, _ = timed(encode_cold, 1)
        warm, acts = timed(lambda: ours.encode(x), 1 if args.quick else 3)
        ref_seconds, ref_acts = timed(lambda: ref.encode(x), 1)
        steps = mp_encode_steps(ours, x)
        ref_ids, ref_replayed = reference_steps(x - b_dec, W, args.k)

    same_atoms = ((acts != 0) == (ref_acts != 0)).all(dim=1)
    close = ((acts - ref_acts).abs() <= 1e-4 * ref_acts.abs().amax(dim=1, keepdim=True).clamp(min=1e-6)).all(dim=1)
    code_agreement = float((same_atoms & close).float().mean())
    agreement = float((steps.atom_ids == ref_ids).all(dim=1).float().mean())
    speedup = ref_seconds / warm
    print(json.dumps({
        "bench": "mp_encode", "agreement": round(agreement, 5), "speedup": round(speedup, 2),
        "code_agreement": round(code_agreement, 5), "reference_exact": bool(torch.equal(ref_replayed, ref_acts)),
        "inputs": str(args.activations) if args.activations else "synthetic",
        "dictionary": str(args.dictionary) if args.dictionary else "random",
        "speedup_cold": round(ref_seconds / cold, 2), "ours_s": round(warm, 3), "ours_cold_s": round(cold, 3),
        "saelens_s": round(ref_seconds, 3), "n": n, "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k,
        "mean_steps": float(steps.n_steps.float().mean()), "threads": torch.get_num_threads(),
        "ok": bool(agreement >= 0.999 and speedup >= 10),
    }))


if __name__ == "__main__":
    main()
