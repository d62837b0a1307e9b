"""Bad input around long jobs, through the CLI: tampered or foreign checkpoints, NaN in an activation cache,
sizes that cannot fit, a cfg.json that lies. Each is one `error:` line, exit 2, and nothing is written."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from store import connect
from tests.helpers import copy_workspace, error_line, run_cli

HOOK = "blocks.0.hook_resid_post"
TABLES = ("training_runs", "dictionaries", "analyses", "activation_caches", "features")


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model):
    """A workspace with a corpus `t`, an activation cache over it and a topk dictionary `tk` trained on it."""
    from analysis.activations import build_cache
    from analysis.corpora import add_corpus
    from analysis.training import TrainRequest, train_dictionary
    from store import Workspace, session

    ws = Workspace.resolve(tmp_path_factory.mktemp("faults") / "ws")
    src = ws.root.parent / "t.txt"
    src.write_text("".join(f"Line {i} of the test corpus says something new: {i * 7 % 13}.\n\n" for i in range(200)))
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(src), "tiny-random", ctx=16)
        cache = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 40, progress=False)
        train_dictionary(ws, con, TrainRequest(arch="topk", activations=cache.path.name, name="tk", d_sae=64, k=4,
                                               tokens=512, batch=128, lr=1e-2), lm=tiny_model, progress=False)
    return ws.root, cache.path.name


@pytest.fixture
def ws(base, tmp_path) -> Path:
    return copy_workspace(base[0], tmp_path / "ws")


def _state(root: Path) -> tuple:
    """Every row of the tables a job writes, and every file of the workspace but the store's."""
    con = connect(root / "sparsescope.duckdb", read_only=True)
    try:
        rows = {t: sorted(map(str, con.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}
    finally:
        con.close()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "sparsescope.duckdb" not in p.name)
    return rows, files


def _refused(monkeypatch, capsys, root: Path, *args) -> str:
    before = _state(root)
    code, _, err = run_cli(monkeypatch, capsys, *args, "-w", str(root))
    assert code == 2, err
    line = error_line(err)
    assert _state(root) == before
    return line


def _checkpoint(root: Path, name: str, tokens: int = 512, lr: float = 1e-2) -> Path:
    """A real checkpoint of a run of `name` on the workspace's cache, as a killed `train` leaves it."""
    from dataclasses import replace

    from analysis.training import CHECKPOINT
    from sae.dictionaries import DictSpec
    from sae.sources import CacheSource
    from sae.training import train
    from tests.factories import train_config

    cache = next((root / "activations").iterdir())
    config = replace(train_config(d_sae=64, k=4, tokens=tokens, batch=128, lr=lr, checkpoint_every=2, log_every=10),
                     init_rows=16_384)
    path = root / "checkpoints" / name / CHECKPOINT
    spec = DictSpec("topk", 64, 64, k=4, hook_name=HOOK, model_name="tiny-random")
    train(spec, config, CacheSource(cache), checkpoint=path, progress=False)
    return path


def _train(name: str, *extra: str, cache: str = "") -> list[str]:
    return ["train", "--arch", "topk", "--activations", cache, "--d-sae", "64", "--k", "4", "--tokens", "512",
            "--batch", "128", "--lr", "0.01", "--name", name, *extra]


def test_a_tampered_checkpoint_is_refused_on_resume(monkeypatch, capsys, ws, base):
    path = _checkpoint(ws, "r")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    save_file(load_file(path) | {"sae.W_dec": torch.zeros(64, 63)}, path, metadata=meta)
    line = _refused(monkeypatch, capsys, ws, *_train("r", "--resume", cache=base[1]))
    assert "does not fit this dictionary: sae.W_dec is float32 [64, 63], expected float32 [64, 64]" in line


def test_a_checkpoint_of_another_config_is_refused_on_resume(monkeypatch, capsys, ws, base):
    _checkpoint(ws, "r", lr=5e-3)
    line = _refused(monkeypatch, capsys, ws, *_train("r", "--resume", cache=base[1]))
    assert "was written with different settings (lr)" in line


def _poison_cache(root: Path) -> None:
    """NaN in shard 0 with the manifest's size and hash updated: only a look at the values can tell."""
    from sae.activations import _sha256

    folder = next((root / "activations").iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    shard = folder / manifest["shards"][0]["file"]
    acts = load_file(shard)["activations"]
    acts[5, 3] = float("nan")
    save_file({"activations": acts}, shard)
    manifest["shards"][0] |= {"bytes": shard.stat().st_size, "sha256": _sha256(shard)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_nan_in_a_cache_is_refused_by_analyze(monkeypatch, capsys, ws):
    _poison_cache(ws)
    line = _refused(monkeypatch, capsys, ws, "analyze", "tk", "--corpus", "t", "--tokens", "640")
    assert "holds NaN or infinite values" in line


def test_nan_in_a_cache_stops_training_with_one_line(monkeypatch, capsys, ws, base):
    _poison_cache(ws)
    code, _, err = run_cli(monkeypatch, capsys, *_train("n", cache=base[1]), "-w", str(ws))
    assert code == 2 and "holds NaN or infinite values" in error_line(err)
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    runs = con.execute("SELECT status, reason FROM training_runs WHERE dictionary = 'n'").fetchall()
    names = [r[0] for r in con.execute("SELECT name FROM dictionaries").fetchall()]
    con.close()
    assert names == ["tk"] and runs[0][0] == "failed" and "NaN" in runs[0][1]  # the run says why it failed
    assert not (ws / "dictionaries" / "n").exists()


@pytest.mark.parametrize("option, value", [("--d-sae", "1000000000"), ("--batch", "1000000000")])
def test_absurd_training_sizes_are_refused_before_allocating(monkeypatch, capsys, ws, base, option, value):
    args = _train("big", cache=base[1])
    args[args.index(option) + 1] = value
    line = _refused(monkeypatch, capsys, ws, *args)
    assert "needs at least" in line and "of cpu memory" in line and "is free" in line


def test_absurd_examples_are_refused_before_allocating(monkeypatch, capsys, ws):
    line = _refused(monkeypatch, capsys, ws, "analyze", "tk", "--corpus", "t", "--tokens", "640",
                    "--examples", "100000000")
    assert "--examples 100000000" in line and "needs at least" in line


def test_a_cache_that_cannot_fit_on_the_disk_is_refused(monkeypatch, capsys, ws):
    import analysis.activations

    monkeypatch.setattr(analysis.activations.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1000))
    line = _refused(monkeypatch, capsys, ws, "activations", "--model", "tiny-random", "--hook",
                    "blocks.1.hook_resid_post", "--corpus", "t", "--tokens", "640")
    assert "caching 40 contexts x 16 tokens x d=64 needs 163.8 kB of disk" in line and "has 1.0 kB free" in line


def test_a_cfg_json_declaring_a_huge_dictionary_is_refused_on_import(monkeypatch, capsys, ws, tmp_path):
    folder = tmp_path / "liar"
    shutil.copytree(ws / "dictionaries" / "tk", folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(cfg | {"d_sae": 10 ** 12}))
    line = _refused(monkeypatch, capsys, ws, "import", str(folder))
    assert "declares d_in=64, d_sae=1,000,000,000,000, but sae_weights.safetensors holds W_dec [64, 64]" in line


def test_the_reasons_show_in_dicts(monkeypatch, capsys, ws, base):
    _poison_cache(ws)
    run_cli(monkeypatch, capsys, *_train("n", cache=base[1]), "-w", str(ws))
    code, out, _ = run_cli(monkeypatch, capsys, "dicts", "-w", str(ws))
    assert code in (0, None) and "unfinished run of n (failed: activation shard" in " ".join(out.split())


def test_nan_rows_are_never_cached(tiny_model, tmp_path):
    from sae.activations import Manifest, read_manifest, write_cache
    from store import InputError

    model = tiny_model
    folder = tmp_path / "c"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=4, n_contexts=2)
    with torch.no_grad():
        saved = model.blocks[0].attn.W_O.clone()
        model.blocks[0].attn.W_O[0, 0, 0] = float("inf")
        try:
            with pytest.raises(InputError, match="NaN or infinite activations in contexts 0..1"):
                write_cache(model, HOOK, folder, lambda lo, hi: np.ones((hi - lo, 4), int).tolist(), want,
                            progress=False)
        finally:
            model.blocks[0].attn.W_O.copy_(saved)
    assert read_manifest(folder) is None and list(folder.iterdir()) == []
