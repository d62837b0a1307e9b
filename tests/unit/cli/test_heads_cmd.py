"""`sparsescope heads` and the per-head commands: happy paths on tiny-random, and one error line for bad input."""
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ws(tmp_path, monkeypatch, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. The dog sat on the log. " * 100)
    folder = str(tmp_path / "ws")
    code, _, err = run_cli(monkeypatch, capsys, "corpus", "add", "t", "--source", str(text), "--model", "tiny-random",
                           "--ctx", "32", "-w", folder)
    assert code == 0, err
    return folder


def test_heads_scan_summary_rerun_and_export(monkeypatch, capsys, ws, tmp_path):
    args = ("heads", "--model", "tiny-random", "--corpus", "t", "--tokens", "256", "--batch", "4", "-w", ws)
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "2 layers x 4 heads" in out and "256 tokens" in out and "prev_token" in out and "(lowest)" in out
    code, out, _ = run_cli(monkeypatch, capsys, *args)  # a rerun replaces
    assert code == 0
    target = tmp_path / "out" / "heads.parquet"
    code, out, err = run_cli(monkeypatch, capsys, "heads-export", str(target), "-w", ws)
    assert code == 0, err
    assert pq.read_table(target).num_rows == 8 * 8 and "wrote 64 head scores" in out


def test_head_pattern_ablate_and_rank(monkeypatch, capsys, ws):
    base = ("--model", "tiny-random", "--prompt", "the cat sat on the mat")
    code, out, err = run_cli(monkeypatch, capsys, "head-pattern", "--layer", "1", "--head", "2", *base, "--last", "5")
    assert code == 0, err
    assert "head 1.2 (KV group 2)" in out
    code, out, err = run_cli(monkeypatch, capsys, "head-ablate", "--layer", "0", "--head", "1", *base, "--mode", "path")
    assert code == 0, err
    assert "loss" in out and "path-ablated" in out
    code, out, err = run_cli(monkeypatch, capsys, "head-ablate", "--layer", "0", "--head", "1", *base, "--mode", "mean",
                             "--corpus", "t", "-w", ws)
    assert code == 0, err  # no scan stored: means come from the corpus' first contexts
    code, out, err = run_cli(monkeypatch, capsys, "head-rank", *base, "--top", "3")
    assert code == 0, err
    assert "target" in out and "logit change" in out


def test_patch_lists_the_strongest_cells(monkeypatch, capsys, ws):
    code, out, err = run_cli(monkeypatch, capsys, "patch", "--clean", "abcXdef", "--corrupted", "abcYdef",
                             "--answer", "g", "--wrong", "h", "--model", "tiny-random", "--top", "3")
    assert code == 0, err
    assert "logit difference" in out and "head outputs" in out and "residual stream" in out
    assert "'X' / 'Y'" in out and "+1.0000" in out  # the changed token entering layer 0 restores the clean run


@pytest.mark.parametrize("args, needle", [
    (["head-pattern", "--layer", "2", "--head", "0", "--prompt", "hi"], "layer 2 is out of range"),
    (["head-pattern", "--layer", "0", "--head", "7", "--prompt", "hi"], "head 7 is out of range"),
    (["head-pattern", "--layer", "0", "--head", "0", "--prompt", ""], "the prompt is empty"),
    (["head-pattern", "--layer", "0", "--head", "0", "--prompt", "x" * 300], "beyond the model's context"),
    (["head-ablate", "--layer", "0", "--head", "0", "--prompt", "hi", "--mode", "half"], "unknown ablation mode"),
    (["head-rank", "--prompt", "hi", "--target", "two words"], "exactly one token"),
    (["patch", "--clean", "abc", "--corrupted", "abcd", "--answer", "g", "--wrong", "h"],
     "the clean prompt has 4, the corrupted prompt 5"),
    (["patch", "--clean", "abc", "--corrupted", "abd", "--answer", "gg", "--wrong", "h"], "is 2 tokens"),
    (["heads", "--tokens", "0"], "must be positive"),
    (["heads", "--corpus", "nope"], "unknown corpus 'nope'"),
    (["heads-export", "x.parquet"], "no head scores stored yet"),
])
def test_bad_input_is_one_error_line(monkeypatch, capsys, ws, args, needle):
    model = [] if args[0] == "heads-export" else ["--model", "tiny-random"]
    code, _, err = run_cli(monkeypatch, capsys, *args, *model, "-w", ws)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
