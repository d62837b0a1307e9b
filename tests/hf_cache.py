"""A Hugging Face cache built inside a test, so the `saelens:` path, TransformerLens model names and `hf:` corpora
run for real with HF_HUB_OFFLINE=1: nothing is downloaded, and nothing here patches a download.

    env = offline_env(root)                           HF_HOME / HF_HUB_CACHE / offline flags for a subprocess
    tiny_gpt2(env)                                    `gpt2` as a tiny GPT-2 (2 layers, d_model 64, byte tokens)
    saelens_release(env, "acme/saes", "blocks.0", sae) a SAELens folder inside the hub repo acme/saes
    cached_dataset(env, "wikitext", "wikitext-2-raw-v1", {"train": [...]})   what load_dataset leaves offline
    run_offline(releases_env(env, releases), [argv], ...)   `sparsescope ARGV` commands in a fresh process

The layout is huggingface_hub's: HF_HUB_CACHE/models--OWNER--NAME/snapshots/REV/... with refs/main naming REV.
SAELens has no extension point for extra releases: `get_pretrained_saes_directory()` returns one cached dict
(read from its pretrained_saes.yaml) that every lookup uses, so the subprocess adds entries to that dict before
the CLI starts (RELEASES names them; each becomes a PretrainedSAELookup as the YAML loader would build it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REV = "5eed" * 10
"""The commit every repo of the test cache is at (refs/main)."""
TINY_GPT2 = dict(vocab_size=257, n_positions=128, n_ctx=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                 eos_token_id=0)
ROOT = Path(__file__).resolve().parents[1]

MARK = "@@sparsescope-exit "
"""Printed to stdout and stderr after each command of run_offline, with its exit code."""
_DRIVER = """
import json, os, sys
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup, get_pretrained_saes_directory

directory = get_pretrained_saes_directory()
for release, entry in json.loads(os.environ["SPARSESCOPE_TEST_RELEASES"]).items():
    ids = {s["id"]: s["path"] for s in entry["saes"]}
    directory[release] = PretrainedSAELookup(
        release=release, repo_id=entry["repo_id"], model=entry["model"], conversion_func=None, saes_map=ids,
        expected_var_explained=dict.fromkeys(ids, 1.0), expected_l0=dict.fromkeys(ids, 0.0),
        neuronpedia_id=dict.fromkeys(ids), norm_scaling_factor={}, config_overrides=None)
from app.cli import main
for argv in json.loads(sys.argv[1]):
    sys.argv, code = ["sparsescope", *argv], 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    for stream in (sys.stdout, sys.stderr):
        print(os.environ["SPARSESCOPE_TEST_MARK"] + str(code), file=stream, flush=True)
"""


def offline_env(root: Path) -> dict[str, str]:
    """Environment of a process that reads only the cache under `root` (created)."""
    root.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HF_HOME": str(root), "HF_HUB_CACHE": str(root / "hub"),
            "HF_DATASETS_CACHE": str(root / "datasets"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "SPARSESCOPE_QUIET": "1",
            "PYTHONPATH": str(ROOT)}


def hub_snapshot(env: dict[str, str], repo_id: str) -> Path:
    """The snapshot folder of model repo `repo_id` at REV (refs/main points at it)."""
    repo = Path(env["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def tiny_gpt2(env: dict[str, str], repo_id: str = "gpt2") -> Path:
    """A tiny random GPT-2 with the byte-level tokenizer of tiny-random, saved as the HF model `repo_id`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from sae.models import tiny_tokenizer

    snapshot = hub_snapshot(env, repo_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**TINY_GPT2)).save_pretrained(snapshot)
    tokenizer = tiny_tokenizer()
    tokenizer.init_kwargs.pop("name_or_path", None)
    tokenizer.save_pretrained(snapshot)
    return snapshot


def saelens_release(env: dict[str, str], repo_id: str, folder: str, sae) -> Path:
    """Save a SAELens SAE as `folder` of the hub repo `repo_id` (SAELens' own hub layout)."""
    path = hub_snapshot(env, repo_id) / folder
    sae.save_model(path)
    return path


def releases_env(env: dict[str, str], releases: dict[str, dict]) -> dict[str, str]:
    """env plus the releases to register, in pretrained_saes.yaml's shape:
    {RELEASE: {"repo_id": ..., "model": ..., "saes": [{"id": ..., "path": ...}]}}."""
    return {**env, "SPARSESCOPE_TEST_RELEASES": json.dumps(releases)}


def run_offline(env: dict[str, str], *commands: list[str], timeout: float = 600) -> list[tuple[int, str, str]]:
    """Each command (`sparsescope ARGV...`) in turn, in one fresh process with `env` (SAELens releases registered
    when env names them): [(exit code, stdout, stderr)] per command."""
    env = {"SPARSESCOPE_TEST_RELEASES": "{}", **env, "SPARSESCOPE_TEST_MARK": MARK}
    out = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([list(c) for c in commands])], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    outs, errs = out.stdout.split(MARK), out.stderr.split(MARK)
    assert len(outs) == len(commands) + 1, out.stderr[-3000:]
    results = []
    for i in range(len(commands)):
        code, text, err = outs[i + 1][:outs[i + 1].index("\n")], outs[i], errs[i]
        if i:  # what follows a marker's exit code belongs to the next command
            text, err = text[text.index("\n") + 1:], err[err.index("\n") + 1:]
        results.append((int(code), text, err))
    return results


def cached_dataset(env: dict[str, str], name: str, config: str, splits: dict[str, list[str]]) -> Path:
    """What `datasets.load_dataset(name, config)` leaves in HF_DATASETS_CACHE when it ran online once: Arrow
    files under NAME/CONFIG/0.0.0/HASH. Built by the Parquet builder from local files; run in a subprocess,
    because `datasets` fixes its cache folder when it is imported."""
    src = Path(env["HF_HOME"]) / "dataset-source" / name.replace("/", "--")
    src.mkdir(parents=True, exist_ok=True)
    code = """
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from datasets.packaged_modules.parquet.parquet import Parquet
name, config, src, splits = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
files = {}
for split, texts in splits.items():
    files[split] = str(src / f"{split}.parquet")
    pq.write_table(pa.table({"text": texts}), files[split])
builder = Parquet(dataset_name=name.split("/")[-1], config_name=config, hash="5eed", data_files=files)
builder.download_and_prepare()
folder = Path(builder.cache_dir).parents[1]   # CONFIG-DATAFILESHASH: load_dataset looks for CONFIG itself
folder.rename(folder.parent / config)
print(folder.parent / config)
"""
    out = subprocess.run([sys.executable, "-c", code, name, config, str(src), json.dumps(splits)], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    return Path(out.stdout.strip().splitlines()[-1])
