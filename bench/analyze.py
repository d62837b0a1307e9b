"""Feature-analysis throughput, and what the analysis adds to a model pass, on the same tokens in one run.

    python bench/analyze.py [--quick] [--model M] [--hook H] [--tokens N] [--dictionary PATH]

Three arms over the same contexts of the built-in corpus, in this process:
  forward   the model up to the hook, activations captured (what `sparsescope analyze` does without a cache)
  analysis  encode + every streaming statistic (analysis.features.stats, MP steps for MP dictionaries) on the
            activations captured by the forward arm, i.e. the pass over a cache (tokens/s reported)
  both      forward followed by the analysis, batch by batch (the pass without a cache)
Prints one JSON line: {"bench": "analyze", "analysis_tokens_per_s": ..., "forward_tokens_per_s": ...,
"overhead": both / forward - 1, "ok": overhead <= 0.5}. The forward and both arms are interleaved batch by
batch so machine noise hits them alike.

Without --dictionary the dictionary is a randomly initialised TopK SAE (d_sae = 8 x d_in, k = 32): exactly
k features fire per token, as in a trained TopK dictionary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="8k tokens")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--hook", default="blocks.6.hook_resid_post")
    parser.add_argument("--tokens", type=int, default=32_768)
    parser.add_argument("--batch", type=int, default=16, help="contexts per batch")
    parser.add_argument("--dictionary", help="a dictionary folder (default: a random TopK SAE)")
    args = parser.parse_args()
    n_tokens = 8_192 if args.quick else args.tokens

    import torch

    from analysis.features.analyze import analyse_batch, mp_accumulator
    from analysis.features.stats import FeatureStatsAccumulator, StatsConfig
    from sae.activations import capture
    from sae.corpus import tokenize_source
    from sae.dictionaries import DictSpec, arch_of, build_training_sae, load_dictionary
    from sae.models import hook_output_dim, load_model, stop_layer

    model = load_model(args.model, device="cpu")
    ctx = 128
    tokens = torch.tensor(tokenize_source(model.tokenizer, "builtin", ctx, False, n_tokens).token_ids)
    torch.manual_seed(0)
    if args.dictionary:
        sae = load_dictionary(Path(args.dictionary))
    else:
        d_in = hook_output_dim(model, args.hook)
        sae = build_training_sae(DictSpec("topk", d_in, 8 * d_in, k=32, hook_name=args.hook)).eval()
    is_mp = arch_of(sae).has_pursuit_steps
    stop = stop_layer(model, args.hook)
    batches = list(torch.split(tokens, args.batch))

    def forward(batch):
        with torch.no_grad():
            return capture(model, args.hook, batch, stop).float().view(len(batch), ctx, -1)

    def analysis(acc, mp, ids, acts):
        analyse_batch(sae, acc, mp, ids, acts)

    def accumulators():
        return FeatureStatsAccumulator(sae.cfg.d_sae, StatsConfig(skip_first=1)), mp_accumulator(sae) if is_mp else None

    forward(batches[0][:2])  # warm-up
    t_forward = t_both = 0.0
    captured = []
    acc_both, mp_both = accumulators()
    start = 0
    for batch in batches:
        ids = torch.arange(start, start + len(batch))
        start += len(batch)
        t = time.perf_counter()
        captured.append((ids, forward(batch)))
        t_forward += time.perf_counter() - t
        t = time.perf_counter()
        analysis(acc_both, mp_both, ids, forward(batch))
        if batch is batches[-1]:
            acc_both.finish()
        t_both += time.perf_counter() - t
    acc, mp = accumulators()
    t = time.perf_counter()
    for ids, acts in captured:
        analysis(acc, mp, ids, acts)
    acc.finish()
    t_analysis = time.perf_counter() - t
    n = tokens.numel()
    overhead = t_both / t_forward - 1
    print(json.dumps({"bench": "analyze", "tokens": n, "d_sae": sae.cfg.d_sae,
                      "analysis_tokens_per_s": round(n / t_analysis, 1),
                      "forward_tokens_per_s": round(n / t_forward, 1),
                      "forward_and_analysis_tokens_per_s": round(n / t_both, 1),
                      "overhead": round(overhead, 3), "ok": overhead <= 0.5}))


if __name__ == "__main__":
    main()
