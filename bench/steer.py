"""Steered generation throughput vs unsteered generation, same prompt, seed and loop, same process.

    python bench/steer.py [--quick] [--model M] [--hook H] [--mode add|clamp|ablate] [--dictionary PATH]

Prints one JSON line: {"bench": "steer", "steered_tokens_per_s": ..., "unsteered_tokens_per_s": ...,
"ratio": ...} (target: ratio >= 0.8). Both arms run through the same KV-cache loop (analysis.steering.lab); the
steered arm has the dictionary's hook doing the edit at every position, including the prompt. Runs are
interleaved and the median of each is taken, so machine noise hits both alike; cpu_ratio is the same ratio
on this process's CPU time, which other processes on a busy machine disturb less.

Without --dictionary the dictionary is a randomly initialised TopK SAE of the right shape (d_in of the hook,
d_sae = 8 x d_in, k = 32): steering cost does not depend on what the features mean. Default mode is clamp,
the heaviest edit (a full encode plus a splice per new token); add is cheaper.

Absolute tokens/s on CPU are low for a 135M model because TransformerLens re-lays out the attention weights
on every forward call (einops rearrange of W_Q/W_K/W_V, repeat_interleave for grouped-query heads): with
one new token per step those copies are ~70% of a step, for both arms alike, so the ratio is unaffected.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def _dictionary(args, model):
    import torch

    from analysis.steering.lab import SteerDictionary
    from sae.dictionaries import DictSpec, build_training_sae, load_dictionary
    from sae.models import hook_output_dim

    if args.dictionary:
        return SteerDictionary("bench", load_dictionary(Path(args.dictionary)), model=model.cfg.model_name)
    torch.manual_seed(0)
    d_in = hook_output_dim(model, args.hook)
    spec = DictSpec("topk", d_in, 8 * d_in, k=32, hook_name=args.hook, model_name=model.cfg.model_name)
    return SteerDictionary("bench", build_training_sae(spec).eval(), hook=args.hook, model=model.cfg.model_name)


def _timed(model, config, dictionaries, arm: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, generated tokens) of one arm's generation, measures off."""
    from analysis.steering.lab import SteerRun

    run = SteerRun(model, config, dictionaries, arms=(arm,), measured=False)
    start, cpu = time.perf_counter(), time.process_time()
    result = run.run()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    ids = result.steered_ids if arm == "steered" else result.default_ids
    return seconds, cpu_seconds, sum(len(row) for row in ids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="12 tokens x 2 repeats, under a minute")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--hook", default="blocks.6.hook_resid_post")
    parser.add_argument("--mode", default="clamp", choices=["add", "clamp", "ablate"])
    parser.add_argument("--dictionary", help="A SAELens-format dictionary folder for --hook (default: random)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); on a "
                        "busy CPU, 1 avoids OpenMP threads waiting on each other")
    args = parser.parse_args()
    tokens, repeats = (12, 2) if args.quick else (args.tokens, args.repeats)

    import torch

    from analysis.steering.lab import Intervention, SteerConfig
    from sae.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model)
    dictionaries = {"bench": _dictionary(args, model)}
    chat = bool(getattr(model.tokenizer, "chat_template", None))
    config = SteerConfig(PROMPT, (Intervention(args.mode, dictionary="bench", feature=1, strength=4.0),),
                         model=model.cfg.model_name, chat=chat, max_new_tokens=tokens, samples=args.samples, seed=0)
    warm = SteerConfig(PROMPT, config.interventions, model=config.model, chat=chat, max_new_tokens=2, samples=1)
    _timed(model, warm, dictionaries, "steered")
    rates = {"default": [], "steered": []}
    cpu_rates = {"default": [], "steered": []}
    for _ in range(repeats):
        for arm in ("default", "steered"):
            seconds, cpu_seconds, n = _timed(model, config, dictionaries, arm)
            rates[arm].append(n / seconds)
            cpu_rates[arm].append(n / cpu_seconds)
    steered, unsteered = statistics.median(rates["steered"]), statistics.median(rates["default"])
    cpu_ratio = statistics.median(cpu_rates["steered"]) / statistics.median(cpu_rates["default"])
    print(json.dumps({"bench": "steer", "steered_tokens_per_s": round(steered, 2),
                      "unsteered_tokens_per_s": round(unsteered, 2), "ratio": round(steered / unsteered, 3),
                      "cpu_ratio": round(cpu_ratio, 3), "mode": args.mode, "tokens": tokens,
                      "samples": args.samples, "model": args.model}))


if __name__ == "__main__":
    main()
