"""`sparsescope corpus add`: bad sources are one `error:` line and write nothing; `--replace` never leaves
results of the old text behind (refused while they exist, deleted with `--force`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import error_line, run_cli

ROOT = Path(__file__).resolve().parents[3]
HOOK = "blocks.1.hook_resid_post"


def _rows(ws: Path, sql: str, *params):
    con = duckdb.connect(str(ws / "sparsescope.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def _add(monkeypatch, capsys, ws, name, source, *extra):
    return run_cli(monkeypatch, capsys, "corpus", "add", name, "--source", str(source), "--model", "tiny-random",
                   "--ctx", "32", "-w", str(ws), *extra)


def _refused_and_nothing_written(code, err, ws, needle):
    assert code == 2
    assert needle in error_line(err)
    assert not (ws / "activations").exists()
    if (ws / "sparsescope.duckdb").exists():
        assert _rows(ws, "SELECT count(*) FROM corpora") == [(0,)]
        assert _rows(ws, "SELECT count(*) FROM contexts") == [(0,)]


def _folder_with_a_directory_named_txt(tmp_path):
    folder = tmp_path / "texts"
    (folder / "x.txt").mkdir(parents=True)
    (folder / "x.txt" / "inner.txt").write_text("nested text " * 50)
    (folder / "a.txt").write_text("real text " * 50)
    return folder


def _parquet_of_numbers(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": pa.array(list(range(500)), pa.int64())}), path)
    return path


def _whitespace_txt(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text(" \t \n" * 400 + "\n\n" + "   " * 300)
    return path


def _whitespace_jsonl(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("".join(json.dumps({"text": " " * 80 + "\n\t"}) + "\n" for _ in range(50)))
    return path


def _jsonl_with_a_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine " * 40}) + "\n{not json}\n")
    return path


def _jsonl_with_a_number_as_text(tmp_path):
    path = tmp_path / "num.jsonl"
    path.write_text("".join(json.dumps({"text": 1234567890 + i}) + "\n" for i in range(200)))
    return path


def _jsonl_without_the_text_field(tmp_path):
    path = tmp_path / "body.jsonl"
    path.write_text(json.dumps({"body": "no text field " * 10}) + "\n")
    return path


@pytest.mark.parametrize("make, needle", [
    (_folder_with_a_directory_named_txt, "x.txt is not a file"),
    (_parquet_of_numbers, "column 'text' holds int64, not text"),
    (_whitespace_txt, "no text: empty or whitespace only"),
    (_whitespace_jsonl, "no text: empty or whitespace only"),
    (_jsonl_with_a_bad_line, "line 2: expected a JSON object with a 'text' field"),
    (_jsonl_with_a_number_as_text, "line 1: 'text' must be a string (got int)"),
    (_jsonl_without_the_text_field, "line 1: expected a JSON object with a 'text' field"),
])
def test_bad_sources_are_one_line_and_write_nothing(monkeypatch, capsys, tmp_path, make, needle):
    ws = tmp_path / "ws"
    code, _, err = _add(monkeypatch, capsys, ws, "c", make(tmp_path))
    _refused_and_nothing_written(code, err, ws, needle)


def test_absurd_tokens_are_refused_before_the_tokenizer_loads(monkeypatch, capsys, tmp_path):
    import analysis.corpora

    def no_tokenizer(model):
        raise AssertionError("the tokenizer was loaded for a refused --tokens")

    monkeypatch.setattr(analysis.corpora, "load_tokenizer", no_tokenizer)
    source = tmp_path / "t.txt"
    source.write_text("some text " * 100)
    ws = tmp_path / "ws"
    code, _, err = _add(monkeypatch, capsys, ws, "c", source, "--tokens", str(10 ** 15))
    _refused_and_nothing_written(code, err, ws, "at most 100,000,000 tokens")


def test_an_hf_dataset_that_is_not_cached_offline_is_one_line(tmp_path):
    """HF_HUB_OFFLINE=1 is read when huggingface_hub is imported, so the CLI runs in its own process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SPARSESCOPE_QUIET": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "corpus", "add", "c", "--source",
                           "hf:sparsescope-tests/no-such-dataset", "--model", "tiny-random", "--ctx", "32",
                           "-w", str(ws)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=180, check=False)
    needle = ("hf:sparsescope-tests/no-such-dataset: the Hub is offline (HF_HUB_OFFLINE) and it is not in the local "
              "datasets cache")
    _refused_and_nothing_written(proc.returncode, proc.stderr, ws, needle)
    assert not (tmp_path / "hf-home").exists() or not any((tmp_path / "hf-home").rglob("*.arrow"))


# ---------------------------------------------------------------------------------------------- --replace

@pytest.fixture
def texts(tmp_path):
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_text("The old text talks about apples. " * 60)
    new.write_text("Completely different words on bicycles! " * 60)
    return old, new


def _analysis_and_label(ws: Path, dictionary: str, corpus: str) -> None:
    """A stored feature analysis of `dictionary` on `corpus` (one feature, one example) and a label."""
    from store import session
    from store.features import write_feature_stats
    from store.queries import set_label

    features = pa.table({"feature": pa.array([0], pa.int32()), "count": pa.array([3], pa.int64()),
                         "density": [0.1], "mean_act": [1.0], "max_act": [2.0]})
    examples = pa.table({"feature": pa.array([0], pa.int32()), "kind": ["top"], "band": pa.array([None], pa.int16()),
                         "rank": pa.array([0], pa.int16()), "corpus": [corpus], "context_id": pa.array([1], pa.int32()),
                         "position": pa.array([4], pa.int32()), "activation": pa.array([2.0], pa.float32()),
                         "window_start": pa.array([0], pa.int32()),
                         "token_acts": pa.array([[0.0, 2.0]], pa.list_(pa.float32()))})
    with session(ws / "sparsescope.duckdb") as con:
        write_feature_stats(con, dictionary, corpus, {"features": features, "feature_examples": examples},
                            n_tokens=100)
        set_label(con, dictionary, 0, "apples")


def _with_dependants(monkeypatch, capsys, tmp_path, texts):
    """A workspace whose corpus `t` has an activation cache, a head scan and a feature analysis."""
    ws = tmp_path / "ws"
    code, _, _ = _add(monkeypatch, capsys, ws, "t", texts[0])
    assert code in (0, None)
    code, _, _ = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook", HOOK,
                         "--corpus", "t", "--tokens", "128", "-w", str(ws))
    assert code in (0, None)
    code, _, _ = run_cli(monkeypatch, capsys, "heads", "--model", "tiny-random", "--corpus", "t", "--tokens", "64",
                         "-w", str(ws))
    assert code in (0, None)
    _analysis_and_label(ws, "dict-a", "t")
    return ws


def test_replace_with_dependants_is_refused_and_changes_nothing(monkeypatch, capsys, tmp_path, texts):
    ws = _with_dependants(monkeypatch, capsys, tmp_path, texts)
    before = _rows(ws, "SELECT context_id, text FROM contexts ORDER BY context_id")
    code, _, err = _add(monkeypatch, capsys, ws, "t", texts[1], "--replace")
    line = error_line(err)
    assert code == 2
    assert "1 activation cache (tiny-random__blocks.1.hook_resid_post__t)" in line
    assert "1 feature analysis (dict-a)" in line and "1 head scan (tiny-random)" in line and "--force" in line
    assert _rows(ws, "SELECT context_id, text FROM contexts ORDER BY context_id") == before
    assert _rows(ws, "SELECT count(*) FROM activation_caches") == [(1,)]
    assert (ws / "activations" / "tiny-random__blocks.1.hook_resid_post__t" / "manifest.json").is_file()
    assert _rows(ws, "SELECT count(*) FROM head_runs") == [(1,)]
    assert _rows(ws, "SELECT count(*) FROM analyses") == [(1,)]


def test_replace_with_force_deletes_the_dependants_and_says_so(monkeypatch, capsys, tmp_path, texts):
    ws = _with_dependants(monkeypatch, capsys, tmp_path, texts)
    code, out, _ = _add(monkeypatch, capsys, ws, "t", texts[1], "--replace", "--force")
    assert code in (0, None)
    assert "1 activation cache (tiny-random__blocks.1.hook_resid_post__t)" in out
    assert "1 feature analysis (dict-a)" in out and "1 head scan (tiny-random)" in out
    assert "removed " in out and not (ws / "activations" / "tiny-random__blocks.1.hook_resid_post__t").exists()
    assert "different words" in _rows(ws, "SELECT text FROM contexts WHERE context_id = 0")[0][0]
    for table in ("activation_caches", "analyses", "features", "feature_examples", "head_runs", "head_stats",
                  "head_examples", "head_means"):
        assert _rows(ws, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert _rows(ws, "SELECT label FROM feature_labels") == [("apples",)]  # labels are never deleted
    # nothing is left to reuse: the next cache is built from the new text
    code, out, err = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook", HOOK,
                             "--corpus", "t", "--tokens", "128", "-w", str(ws))
    assert code in (0, None) and "wrote 128 tokens" in out and "note" not in err


def test_replace_force_with_a_bad_source_deletes_nothing(monkeypatch, capsys, tmp_path, texts):
    ws = _with_dependants(monkeypatch, capsys, tmp_path, texts)
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n\n   ")
    code, _, err = _add(monkeypatch, capsys, ws, "t", blank, "--replace", "--force")
    assert code == 2 and "no text" in error_line(err)
    assert _rows(ws, "SELECT count(*) FROM activation_caches") == [(1,)]
    assert _rows(ws, "SELECT count(*) FROM analyses") == [(1,)]
    assert "apples" in _rows(ws, "SELECT text FROM contexts WHERE context_id = 0")[0][0]


def test_replace_without_dependants_needs_no_force(monkeypatch, capsys, tmp_path, texts):
    ws = tmp_path / "ws"
    _add(monkeypatch, capsys, ws, "t", texts[0])
    code, out, _ = _add(monkeypatch, capsys, ws, "t", texts[1], "--replace")
    assert code in (0, None) and "deleted" not in out
    assert "different words" in _rows(ws, "SELECT text FROM contexts WHERE context_id = 0")[0][0]


def test_force_leaves_a_cache_folder_outside_the_workspace_alone(monkeypatch, capsys, tmp_path, texts):
    from store import session
    from store.models import CacheRow, upsert_cache

    ws = tmp_path / "ws"
    _add(monkeypatch, capsys, ws, "t", texts[0])
    elsewhere = tmp_path / "elsewhere" / "m__h__t"
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text("{}")
    with session(ws / "sparsescope.duckdb") as con:
        upsert_cache(con, CacheRow("m__h__t", "tiny-random", HOOK, "t", 64, 64, str(elsewhere), True))
    code, out, _ = _add(monkeypatch, capsys, ws, "t", texts[1], "--replace", "--force")
    assert code in (0, None) and f"kept {elsewhere}" in out
    assert (elsewhere / "manifest.json").is_file()
    assert _rows(ws, "SELECT count(*) FROM activation_caches") == [(0,)]
