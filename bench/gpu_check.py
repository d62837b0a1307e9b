"""Every stage on the GPU against the same stage on the CPU, at small size: activation cache, training of each
architecture, analysis, matching pursuit's atoms, steering, head scores / pattern / ablation / ranking / DFA,
and what the UI pages compute (prompt inspector, dictionary comparison).

    python bench/gpu_check.py [--quick] [--device cuda] [--reference cpu] [--threads A,B] [--no-watch]

Both runs start from one workspace built here (tiny-random, a few hundred corpus tokens, a fixed dictionary of
every architecture, fixed input rows), so a difference is the device's. Results must agree: identical MP atoms
(on at least 99.8% of the rows), greedy steering tokens identical, statistics within the tolerances of
TOLERANCES (training runs bf16 autocast on the GPU, hence its loose bounds). A second pass on the device runs
under sae.device_watch.DeviceWatch: nothing may leave the device. Prints one JSON line:
{"bench": "gpu_check", "device": "cuda", "reference": "cpu", "ok": ..., "failures": [...], "seconds": {...},
 "speedup": {...}, "watch_problems": [...]}; exits 1 when a check fails. Without CUDA it prints one line saying
no GPU was found and exits 0. `--device cpu --threads 1,2` compares the CPU with itself (tests/unit do).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARSESCOPE_QUIET", "1")

MODEL, HOOK, ATTN, CORPUS = "tiny-random", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "check"
PROMPT = "The cat sat on the mat because it was warm"
D_SAE, K = 128, 4
TOLERANCES = (("train.", 0.15, 0.3), ("steer.kl", 1e-3, 1e-2), ("analyse.", 5e-3, 1e-3), ("", 1e-4, 1e-3))
"""(key prefix, atol, rtol) for float results, first match wins. Training runs bf16 autocast on the GPU; a
feature whose activation ties another's at float precision may flip in or out of a top-k (densities)."""
MIN_SAME = (("mp.atoms", 0.998), ("ui.inspect.", 0.98), ("", 1.0))
"""(key prefix, least share of identical rows) for integer results, first match wins."""


@dataclass(frozen=True)
class Size:
    contexts: int = 32
    ctx: int = 32
    train_tokens: int = 4096

    @property
    def tokens(self) -> int:
        return self.contexts * self.ctx


@dataclass
class Run:
    """One pass over the stages on one device: its workspace, model and what each stage found."""

    ws: object
    lm: object
    device: str
    size: Size
    cache: Path | None = None
    record: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def _archs() -> list[str]:
    """The architectures `train --arch` takes (a neuron dictionary is made from a model, not trained)."""
    from sae.dictionaries.registry import trainable

    return [a.name for a in trainable()]


def build_base(root: Path, size: Size) -> Path:
    """The workspace both runs copy: the corpus, a fixed dictionary per architecture and an attention one."""
    import torch

    from analysis.corpora import add_corpus
    from store import Workspace, session
    from store.dictionaries import DictionaryRow, add_dictionary
    from tests.factories import saved_dictionary

    ws = Workspace.resolve(root)
    with session(ws.db_path) as con:
        add_corpus(con, CORPUS, "builtin", MODEL, tokens=size.tokens, ctx=size.ctx)
        torch.manual_seed(0)
        for arch, hook in [(a, HOOK) for a in _archs()] + [("topk", ATTN)]:
            name = f"fixed-{arch}" if hook == HOOK else "fixed-attn"
            folder = saved_dictionary(ws.named("dictionaries", name), arch=arch, d_sae=D_SAE, k=K, hook_name=hook,
                                      model_name=MODEL)
            add_dictionary(con, DictionaryRow(name, MODEL, hook, arch, 64, D_SAE, K, str(folder)))
    torch.save(torch.randn(512, 64, generator=torch.Generator().manual_seed(1)) * 3, ws.root / "rows.pt")
    return ws.root


# ---------------------------------------------------------------------------------------------- stages

def stage_cache(run: Run) -> dict:
    from analysis.activations import build_cache
    from sae.activation_reader import ActivationReader
    from store import session

    with session(run.ws.db_path) as con:
        run.cache = build_cache(run.ws, con, run.lm, HOOK, CORPUS, run.size.tokens, batch=8, progress=False).path
    acts = [a.reshape(-1, a.shape[-1]) for _, a in ActivationReader(run.cache).contexts()]
    return {"cache.acts": np.concatenate([a.float().numpy() for a in acts])}


def stage_train(run: Run) -> dict:
    from analysis.training import TrainRequest, train_in_workspace
    from sae.dictionaries import ARCHITECTURES

    out = {}
    for arch in _archs():
        k = K if ARCHITECTURES[arch].default_k is not None else None
        req = TrainRequest(arch=arch, activations=str(run.cache), name=f"trained-{arch}", d_sae=D_SAE, k=k,
                           tokens=run.size.train_tokens, batch=256, lr=1e-3, device=run.device, checkpoint_every=0)
        _, metrics = train_in_workspace(run.ws, req, lm=run.lm, progress=False)
        out |= {f"train.{arch}.fvu": metrics["fvu"], f"train.{arch}.l0": metrics["l0"]}
    return out


def stage_analyse(run: Run) -> dict:
    from analysis.features.analyze import AnalyzeRequest, analyze_dictionary
    from store import session

    out = {}
    for arch in _archs():
        req = AnalyzeRequest(f"fixed-{arch}", corpus=CORPUS, tokens=run.size.tokens, examples=3, quantiles=2,
                             batch=8, device=run.device)
        analyze_dictionary(run.ws, req, lm=run.lm, progress=False)
        with session(run.ws.db_path, read_only=True) as con:
            table = con.execute("SELECT density, mean_act, max_act FROM features WHERE dictionary = ? "
                                "ORDER BY feature", [req.dictionary]).fetchnumpy()
        out |= {f"analyse.{arch}.{column}": np.asarray(values) for column, values in table.items()}
    return out


def stage_mp(run: Run) -> dict:
    import torch

    from analysis.dictionaries import open_dictionary
    from sae.dictionaries import mp_encode_steps

    _, sae = open_dictionary(run.ws, "fixed-mp", device=run.device)
    with torch.no_grad():
        found = mp_encode_steps(sae, torch.load(run.ws.root / "rows.pt").to(run.device))
    return {"mp.atoms": found.atom_ids.cpu().numpy(), "mp.acts": found.feature_acts.float().cpu().numpy()}


def stage_steer(run: Run) -> dict:
    from analysis.steering.lab import Intervention, SteerConfig, steer
    from analysis.steering.runs import load_dictionaries
    from store import session

    config = SteerConfig(PROMPT, (Intervention("add", dictionary="fixed-topk", feature=3, strength=4.0),),
                         model=MODEL, chat=False, max_new_tokens=8, samples=2, temperature=0.0)
    with session(run.ws.db_path, read_only=True) as con:
        dictionaries = load_dictionaries(con, config, run.ws, device=run.device)
    result = steer(run.lm, config, dictionaries)
    return {"steer.default_ids": result.default_ids, "steer.steered_ids": result.steered_ids,
            "steer.kl_mean": result.measures["kl_mean"]}


def stage_heads(run: Run) -> dict:
    import torch

    from analysis.dictionaries import open_dictionary
    from analysis.heads.ablation import ablate_head
    from analysis.heads.dfa import feature_dfa, head_attribution
    from analysis.heads.prompt import head_pattern
    from analysis.heads.rank import rank_heads
    from analysis.heads.scan import HeadScanConfig, scan_heads
    from store import session
    from store.corpora import context_tokens

    with session(run.ws.db_path, read_only=True) as con:
        tokens = torch.tensor(context_tokens(con, CORPUS, 0, run.size.contexts))
    config = HeadScanConfig(batch=8, random_seqs=2, random_half=8, mean_contexts=8)
    scan = scan_heads(run.lm, tokens, list(range(len(tokens))), config, progress=False)
    out = {f"heads.{score}": values for score, values in scan.scores.items()} | {"heads.mean_z": scan.mean_z}
    ranking = rank_heads(run.lm, PROMPT)
    _, attn = open_dictionary(run.ws, "fixed-attn", device=run.device)
    return out | {"heads.pattern": head_pattern(run.lm, PROMPT, 1, 2).pattern,
                  "heads.ablated_loss": ablate_head(run.lm, PROMPT, 1, 2).loss_ablated,
                  "heads.rank": np.array([e.logit_delta for e in sorted(ranking.effects,
                                                                        key=lambda e: (e.layer, e.head))]),
                  "heads.dfa": feature_dfa(run.lm, attn, PROMPT, features=[0, 1, 2, 3]).dfa,
                  "heads.attribution": head_attribution(attn, run.lm.cfg.n_heads).numpy()}


def stage_ui(run: Run) -> dict:
    """What the UI pages compute (app/ui/data calls these on the model's device): the prompt inspector over
    every dictionary of the site, and a dictionary comparison."""
    from analysis.compare import compare_dictionaries
    from analysis.dictionaries import open_dictionary
    from analysis.features.inspector import inspect_prompt

    saes = {f"fixed-{a}": open_dictionary(run.ws, f"fixed-{a}", device=run.device)[1] for a in _archs()}
    out = {}
    for name, reading in inspect_prompt(run.lm, HOOK, PROMPT, saes).readings.items():
        out |= {f"ui.inspect.{name}.ids": reading.ids, f"ui.inspect.{name}.acts": reading.acts}
    return out | {"ui.compare.cos": compare_dictionaries(saes["fixed-topk"], saes["fixed-relu"]).cos}


STAGES = {"cache": stage_cache, "train": stage_train, "analyse": stage_analyse, "mp": stage_mp,
          "steer": stage_steer, "heads": stage_heads, "ui": stage_ui}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_stages(base: Path, scratch: Path, device: str, size: Size, threads: int | None = None,
               stages=STAGES) -> Run:
    """Every stage on `device` (with `threads` CPU threads) in a fresh copy of the base workspace."""
    import torch

    from sae.models import load_model
    from store import Workspace

    root = Path(tempfile.mkdtemp(prefix=f"ws-{device.replace(':', '')}-", dir=scratch))
    shutil.copytree(base, root, dirs_exist_ok=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        run = Run(Workspace.resolve(root), load_model(MODEL, device=device), device, size)
        for name, stage in stages.items():
            _sync(device)
            start = time.perf_counter()
            run.record |= stage(run)
            _sync(device)
            run.seconds[name] = round(time.perf_counter() - start, 3)
        return run
    finally:
        torch.set_num_threads(before)


def watch_stages(base: Path, scratch: Path, device: str, size: Size, threads: int | None = None,
                 stages=STAGES) -> list[str]:
    """The stages again under a DeviceWatch on `device`: what left the device (empty when nothing did)."""
    from sae.device_watch import DeviceWatch

    with DeviceWatch(device) as watch:
        run_stages(base, scratch, device, size, threads, stages)
    return watch.problems


# ---------------------------------------------------------------------------------------------- comparing

def _tolerance(key: str) -> tuple[float, float]:
    return next((atol, rtol) for prefix, atol, rtol in TOLERANCES if key.startswith(prefix))


def compare_value(key: str, ref, got) -> tuple[bool, float]:
    """(agrees, how far apart): max abs difference for floats, share of differing rows for integers."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return False, float("inf")
    if ref.dtype.kind in "fc":
        atol, rtol = _tolerance(key)
        if not (np.isfinite(ref) == np.isfinite(got)).all():
            return False, float("inf")
        diff = float(np.nanmax(np.abs(ref - got))) if ref.size else 0.0
        return bool(np.allclose(got, ref, atol=atol, rtol=rtol, equal_nan=True)), diff
    rows = (ref == got).reshape(len(ref), -1).all(axis=1) if ref.ndim else np.array([ref == got])
    differ = float(1 - rows.mean()) if rows.size else 0.0
    return 1 - differ >= next(share for prefix, share in MIN_SAME if key.startswith(prefix)), differ


def compare_records(ref: dict, got: dict) -> tuple[list[str], dict[str, float]]:
    """(failures, difference per key) of two runs' records."""
    failures, diffs = [], {}
    for key in sorted(set(ref) | set(got)):
        if key not in ref or key not in got:
            failures.append(f"{key}: only in {'the reference' if key in ref else 'the device run'}")
            continue
        ok, diffs[key] = compare_value(key, ref[key], got[key])
        if not ok:
            failures.append(f"{key}: differs by {diffs[key]:.3g}")
    return failures, diffs


def check(device: str, reference: str, size: Size, threads: tuple[int | None, int | None] = (None, None),
          watch: bool = True, stages=STAGES) -> dict:
    """Run both passes and compare: the JSON line's fields."""
    with tempfile.TemporaryDirectory(prefix="sparsescope-gpu-check-") as tmp:
        scratch = Path(tmp)
        base = build_base(scratch / "base", size)
        ref = run_stages(base, scratch, reference, size, threads[0], stages)
        got = run_stages(base, scratch, device, size, threads[1], stages)
        failures, diffs = compare_records(ref.record, got.record)
        problems = watch_stages(base, scratch, device, size, threads[1], stages) if watch else []
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    return {"bench": "gpu_check", "device": device, "reference": reference, "threads": list(threads),
            "ok": not failures and not problems, "failures": failures, "watch_problems": problems,
            "seconds": {"reference": ref.seconds, "device": got.seconds},
            "speedup": {s: round(ref.seconds[s] / max(got.seconds[s], 1e-9), 2) for s in got.seconds},
            "largest_differences": {k: round(v, 6) if np.isfinite(v) else str(v) for k, v in worst}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="16 contexts of 32 tokens, 2048 training tokens")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--reference", default="cpu")
    parser.add_argument("--threads", default="", help="CPU threads of the reference and device runs, e.g. 1,2")
    parser.add_argument("--no-watch", action="store_true", help="skip the DeviceWatch pass")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu_check", "gpu": False, "ok": True,
                          "note": "no GPU found (torch.cuda.is_available() is False): nothing to check"}))
        return 0
    threads = tuple(int(t) if t else None for t in (args.threads.split(",") + ["", ""])[:2])
    size = Size(contexts=16, train_tokens=2048) if args.quick else Size()
    result = check(args.device, args.reference, size, threads, watch=not args.no_watch)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
