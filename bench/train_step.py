"""Training throughput of our sparse TopK train_step vs SAELens' TopKTrainingSAE step, in one run.

Both start from the same weights and see the same batches. A SAELens step is what its trainer does:
training_forward_pass, backward, clip the gradient norm to 1, Adam step, zero_grad; ours is
sae.dictionaries.train_step, which does the same plus its bookkeeping. Steps alternate between the two so
that load on the machine hits both alike; the median step time gives tokens/s.

loss_rel_diff: relative difference of the two losses on the first batch (identical weights).

    python bench/train_step.py [--quick] [--dead-fraction 0.25]
(targets: speedup >= 3, loss_rel_diff < 1e-4)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae.dictionaries import DictSpec, build_training_sae, train_step


def saelens_step(sae: TopKTrainingSAE, batch: torch.Tensor, optimizer, dead: torch.Tensor | None) -> float:
    output = sae.training_forward_pass(TrainStepInput(batch, {}, dead, 0, False))
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return output.loss.item()


def timed(fn) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (under a minute)")
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each (after one warm-up step)")
    parser.add_argument("--dead-fraction", type=float, default=0.0,
                        help="share of features marked dead, to include the AuxK loss in both")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps
    torch.manual_seed(0)

    ours = build_training_sae(DictSpec("topk", args.d_in, args.d_sae, k=args.k))
    ref = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k,
                                                aux_loss_coefficient=ours.cfg.aux_loss_coefficient))
    state = ours.state_dict()
    dead = torch.rand(args.d_sae) < args.dead_fraction if args.dead_fraction else None
    if dead is not None:  # our train_step reads the dead mask from the firing history
        state["steps_since_fired"][dead] = ours.cfg.dead_feature_window + 10**9
    ours.load_state_dict(state)
    ref.load_state_dict({name: value for name, value in state.items() if name != "steps_since_fired"})
    ours_opt, ref_opt = torch.optim.Adam(ours.parameters(), lr=1e-4), torch.optim.Adam(ref.parameters(), lr=1e-4)
    batches = [torch.randn(args.batch, args.d_in) for _ in range(steps + 1)]

    ours_times, ref_times = [], []
    for i, batch in enumerate(batches):
        ref_seconds, ref_loss = timed(lambda: saelens_step(ref, batch, ref_opt, dead))
        ours_seconds, out = timed(lambda: train_step(ours, batch, ours_opt, i, len(batches)))
        if i == 0:  # same weights, same batch: the losses must agree
            loss_rel_diff = abs(float(out.loss) - ref_loss) / abs(ref_loss)
        else:
            ours_times.append(ours_seconds)
            ref_times.append(ref_seconds)

    ours_tps = args.batch / statistics.median(ours_times)
    ref_tps = args.batch / statistics.median(ref_times)
    speedup = ours_tps / ref_tps
    print(json.dumps({
        "bench": "train_step", "speedup": round(speedup, 2), "loss_rel_diff": float(f"{loss_rel_diff:.3g}"),
        "tokens_per_s": round(ours_tps), "saelens_tokens_per_s": round(ref_tps), "steps": steps,
        "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k, "batch": args.batch,
        "dead_fraction": args.dead_fraction, "threads": torch.get_num_threads(),
        "ok": bool(speedup >= 3 and loss_rel_diff < 1e-4),
    }))


if __name__ == "__main__":
    main()
