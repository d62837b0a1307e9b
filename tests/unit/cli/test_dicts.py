"""`sparsescope train / dicts / import`: happy paths, and every bad input is one line, exit 2, nothing written."""
import numpy as np
import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from safetensors.torch import save_file

from store import connect
from store.dictionaries import get_dictionary, get_metrics, list_dictionaries
from tests.factories import sparse_activations
from tests.helpers import error_line, run_cli

FAST = ["--d-sae", "64", "--k", "4", "--tokens", "1024", "--batch", "256", "--lr", "0.01"]


def _dictionaries(ws):
    if not (ws / "sparsescope.duckdb").exists():
        return []
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    try:
        return [d.name for d in list_dictionaries(con)]
    finally:
        con.close()


@pytest.fixture
def acts(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, sparse_activations(2000))
    return path


@pytest.fixture
def plain_saelens(tmp_path):
    """A dictionary written by plain SAELens, not by SparseScope."""
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=32))
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    folder = tmp_path / "plain"
    sae.save_model(folder)
    return folder, sae


def test_train_list_import_round_trip(monkeypatch, capsys, tmp_path, acts, plain_saelens):
    ws = tmp_path / "ws"
    code, out, err = run_cli(monkeypatch, capsys, "train", "--arch", "topk", "--activations", str(acts), *FAST,
                             "--name", "t1", "-w", str(ws))
    assert code in (0, None), err
    assert "dictionary t1" in out and "FVU" in out
    folder = ws / "dictionaries" / "t1"
    assert (folder / "cfg.json").is_file() and not (ws / "checkpoints" / "t1").exists()
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    row, metrics = get_dictionary(con, "t1"), get_metrics(con, "t1")
    con.close()
    assert (row.arch, row.d_in, row.d_sae, row.k) == ("topk", 16, 64, 4) and 0 < metrics["fvu"] < 1.5
    assert metrics["l0"] == 4 and "ce_recovered" not in metrics  # a bare file has no model to splice into
    # plain SAELens loads what SparseScope saved
    loaded = SAE.load_from_disk(folder)
    assert loaded.cfg.architecture() == "topk"
    code, out, _ = run_cli(monkeypatch, capsys, "import", str(plain_saelens[0]), "-w", str(ws))
    assert code in (0, None) and "imported plain (relu" in out
    code, out, _ = run_cli(monkeypatch, capsys, "import", str(folder), "--name", "t1-copy", "-w", str(ws))
    assert code in (0, None)
    from app.commands.common import console

    monkeypatch.setattr(console, "width", 240)  # the whole table on one line per dictionary
    code, out, _ = run_cli(monkeypatch, capsys, "dicts", "-w", str(ws))
    assert code in (0, None) and "t1" in out and "plain" in out and "t1-copy" in out
    assert _dictionaries(ws) == ["t1", "plain", "t1-copy"]
    assert (ws / "dictionaries" / "t1-copy" / "cfg.json").is_file()


def test_imported_plain_saelens_dictionary_keeps_its_numbers(tmp_path, plain_saelens, con, ws):
    from analysis.dictionaries import import_dictionary
    from sae.dictionaries import load_dictionary

    folder, original = plain_saelens
    row = import_dictionary(ws, con, str(folder))
    assert (row.name, row.arch, row.hook, row.source) == ("plain", "relu", "blocks.0.hook_resid_post",
                                                          str(folder.resolve()))
    x = torch.randn(10, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_dictionary(row.path).encode(x), original.encode(x))


def _truncated_checkpoint(ws):
    from analysis.training import CHECKPOINT

    path = ws / "checkpoints" / "t" / CHECKPOINT
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    return path


def _bad_files(tmp_path):
    three_d = tmp_path / "three_d.npy"
    np.save(three_d, np.zeros((4, 5, 6), np.float32))
    nan_rows = tmp_path / "nan_rows.npy"
    data = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    data[3, 1], data[7, :] , data[9, 0] = np.nan, np.inf, -np.inf
    np.save(nan_rows, data)
    two = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(30, 4), "b": torch.zeros(30, 4)}, two)
    return {"three_d": three_d, "nan_rows": nan_rows, "two": two}


@pytest.mark.parametrize("case, args, needle", [
    ("shape", ["--activations", "{three_d}"], "expected a 2-D [N, d] matrix"),
    ("nan", ["--activations", "{nan_rows}"], "3 of 100 rows contain NaN or Inf"),
    ("tensors", ["--activations", "{two}"], "holds 2 tensors"),
    ("k>d_sae", ["--activations", "{acts}", "--d-sae", "8", "--k", "9"], "--k must be between 1 and --d-sae (8)"),
    ("k=0", ["--activations", "{acts}", "--k", "0"], "--k must be between 1"),
    ("k<0", ["--activations", "{acts}", "--k", "-3"], "--k must be between 1"),
    ("d_in", ["--activations", "{acts}", "--d-in", "32"], "--d-in 32 does not match the activations (d_in = 16)"),
    ("arch", ["--arch", "sparse", "--activations", "{acts}"], "unknown architecture 'sparse'"),
    ("resume-truncated", ["--activations", "{acts}", "--resume"], "is truncated or corrupted"),
    ("resume-missing", ["--activations", "{acts}", "--resume", "--name", "other"], "no checkpoint to resume"),
    ("stale-checkpoint", ["--activations", "{acts}"], "add --resume to continue it"),
    ("exists", ["--activations", "{acts}", "--name", "plain"], "dictionary 'plain' already exists"),
    ("missing", ["--activations", "no_such_cache"], "neither an activation cache nor"),
    ("nothing", [], "give --activations CACHE|FILE, or --model and --hook"),
    ("lr", ["--activations", "{acts}", "--lr", "0"], "--lr must be positive"),
    ("name", ["--activations", "{acts}", "--name", "../evil"], "dictionary name '../evil'"),
    ("l1", ["--activations", "{acts}", "--l1", "0.5"], "--l1 does not apply to topk"),
    ("gba-target", ["--arch", "gba", "--activations", "{acts}", "--option", "target_high=2"],
     "--option target_high is a frequency: it must be in (0, 1] (got 2.0)"),
    ("gba-groups", ["--arch", "gba", "--activations", "{acts}", "--option", "groups=0"],
     "--option groups must be at least 1"),
    ("gba-too-many-groups", ["--arch", "gba", "--activations", "{acts}", "--d-sae", "8", "--option", "groups=9"],
     "--option groups (9) cannot exceed the number of features (8)"),
    ("option-elsewhere", ["--activations", "{acts}", "--option", "groups=4"], "--option does not apply to topk"),
    ("mp-threshold", ["--arch", "mp", "--activations", "{acts}", "--option", "residual_threshold=-0.5"],
     "--option residual_threshold must be a finite number >= 0 (got -0.5)"),
    ("mp-adaptive", ["--arch", "mp", "--activations", "{acts}", "--option", "adaptive=maybe"],
     "--option adaptive must be bool (got 'maybe')"),
    ("adaptive-elsewhere", ["--activations", "{acts}", "--option", "adaptive=true"], "--option does not apply to topk"),
])
def test_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, acts, plain_saelens, case, args,
                                                  needle):
    ws = tmp_path / "ws"
    files = _bad_files(tmp_path) | {"acts": acts}
    if case == "exists":
        run_cli(monkeypatch, capsys, "import", str(plain_saelens[0]), "-w", str(ws))
    if case in ("resume-truncated", "stale-checkpoint"):
        _truncated_checkpoint(ws)
    before = _dictionaries(ws)
    args = [a.format(**files) for a in args]
    arch = [] if "--arch" in args else ["--arch", "topk"]
    name = [] if "--name" in args else ["--name", "t"]
    code, _, err = run_cli(monkeypatch, capsys, "train", *arch, *args, *name, "--tokens", "512", "-w", str(ws))
    assert code == 2, err
    assert needle in error_line(err)
    assert _dictionaries(ws) == before
    assert not (ws / "dictionaries" / "t").exists() and not (ws / "dictionaries" / "other").exists()


def test_import_bad_input(monkeypatch, capsys, tmp_path, plain_saelens):
    ws = tmp_path / "ws"
    for ref, needle in ((str(tmp_path), "not a SAELens dictionary folder"), ("saelens:no-slash", "RELEASE/ID")):
        code, _, err = run_cli(monkeypatch, capsys, "import", ref, "-w", str(ws))
        assert code == 2 and needle in error_line(err)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cfg.json").write_text("{not json")
    (broken / "sae_weights.safetensors").write_bytes(b"")
    code, _, err = run_cli(monkeypatch, capsys, "import", str(broken), "-w", str(ws))
    assert code == 2 and "not valid JSON" in error_line(err)
    run_cli(monkeypatch, capsys, "import", str(plain_saelens[0]), "-w", str(ws))
    code, _, err = run_cli(monkeypatch, capsys, "import", str(plain_saelens[0]), "-w", str(ws))
    assert code == 2 and "already exists" in error_line(err)
    assert _dictionaries(ws) == ["plain"] and not (ws / "dictionaries" / "broken").exists()


@pytest.mark.parametrize("bad", [["--lr", "0"], ["--k", "0"], ["--arch", "nope"], ["--l1", "1"]])
def test_bad_options_do_not_create_the_streaming_corpus(monkeypatch, capsys, tmp_path, bad):
    ws = tmp_path / "ws"
    arch = [] if "--arch" in bad else ["--arch", "topk"]
    code, _, err = run_cli(monkeypatch, capsys, "train", *arch, *bad, "--model", "tiny-random", "--hook",
                           "blocks.0.hook_resid_post", "--tokens", "512", "-w", str(ws))
    assert code == 2 and error_line(err)
    if (ws / "sparsescope.duckdb").exists():
        con = connect(ws / "sparsescope.duckdb", read_only=True)
        assert con.execute("SELECT count(*) FROM corpora").fetchall() == [(0,)]
        con.close()
