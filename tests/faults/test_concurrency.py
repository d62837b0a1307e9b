"""Jobs at once on one workspace: a long `activations` does not hold the store, so `analyze` and `heads` started
meanwhile finish; two writers take turns; two trainings of one name: one trains, the other is refused at once."""
import time

import pytest

from tests.fault_workspace import TRAIN
from tests.helpers import cli_process, copy_workspace, start_cli, store_rows

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(fault_base, tmp_path, tiny_model):
    """The base workspace with the builtin corpus at 400k tokens (made up front: `analyze` would make it with
    250k if it came first, and `activations --tokens 400000` would then find fewer)."""
    from analysis.corpora import ensure_corpus
    from store import session

    root = copy_workspace(fault_base, tmp_path / "ws")
    with session(root / "sparsescope.duckdb") as con:
        ensure_corpus(con, "builtin", "tiny-random", 400_000)
    return root


def _finish(proc, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_analyze_and_heads_finish_while_activations_run(ws):
    long = start_cli("activations", "--model", "tiny-random", "--hook", "blocks.1.hook_resid_post", "--tokens",
                     "400000", "-w", ws, threads=1)
    folder = ws / "activations" / "tiny-random__blocks.1.hook_resid_post__builtin"
    while not (folder / "manifest.json").exists() and long.poll() is None:  # its first shard is written
        time.sleep(0.2)
    others = [start_cli("analyze", "tk", "--tokens", "8192", "--examples", "5", "-w", ws, threads=1),
              start_cli("heads", "--model", "tiny-random", "--tokens", "4096", "-w", ws, threads=1)]
    results = [_finish(p) for p in others]
    assert long.poll() is None  # both finished while the cache was still being written
    results.append(_finish(long))
    assert [code for code, _ in results] == [0, 0, 0], [err for _, err in results]
    db = ws / "sparsescope.duckdb"
    assert store_rows(db, "analyses", "dictionary = 'tk'")[0][1:4] == ("tiny-random", "builtin", 8192 // 128 * 127)
    assert store_rows(db, "head_runs", "corpus = 'builtin'")[0][:2] == ("tiny-random", "builtin")
    caches = store_rows(db, "activation_caches", "hook = 'blocks.1.hook_resid_post'")
    assert [(c[5], c[7]) for c in caches] == [(400_000, True)]


def _says_waiting(proc) -> bool:
    """Whether the process' stderr shows the store's waiting line (read up to it; False at its end)."""
    return any("waiting for the store" in line for line in proc.stderr)


def test_two_writers_take_turns(ws, tmp_path):
    """While another process holds the store, two writers (`corpus add`, `import`) wait for it, saying so, and both
    succeed, one after the other, once it is let go."""
    from store import connect
    from tests.factories import saved_dictionary

    folder = saved_dictionary(tmp_path / "imported", d_sae=32)
    held = connect(ws / "sparsescope.duckdb")  # this process plays a long job's final transaction
    try:
        corpus = start_cli("corpus", "add", "big", "--source", "builtin", "--tokens", "200000", "--model",
                           "tiny-random", "-w", ws, threads=1)
        imported = start_cli("import", folder, "-w", ws, threads=1)
        assert _says_waiting(corpus) and _says_waiting(imported)  # each came while the store was held, and waits
        assert corpus.poll() is None and imported.poll() is None
    finally:
        held.close()
    (corpus_code, corpus_err), (import_code, import_err) = _finish(corpus), _finish(imported)
    assert (corpus_code, import_code) == (0, 0), (corpus_err, import_err)
    db = ws / "sparsescope.duckdb"
    assert store_rows(db, "corpora", "name = 'big'") and store_rows(db, "dictionaries", "name = 'imported'")


def test_one_name_trains_in_one_process_at_a_time(ws):
    from store import connect

    first = start_cli("train", *TRAIN, "--name", "dup", "-w", ws)
    lock = ws / "checkpoints" / "dup" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.read_text().strip() == str(first.pid)
    # This process now takes the store and keeps it: the first run, which holds the name, waits for the store
    # (to plan or to record), so it is surely running while the others start.
    held = connect(ws / "sparsescope.duckdb")
    try:
        # the same command failing at its options: how long a `train` takes to start and stop on this machine now
        t = time.monotonic()
        baseline = cli_process("train", *TRAIN, "--lr", "0", "--name", "other", "-w", ws)
        baseline_s = time.monotonic() - t
        t = time.monotonic()
        second = cli_process("train", *TRAIN, "--name", "dup", "-w", ws)
        second_s = time.monotonic() - t
        assert first.poll() is None
    finally:
        held.close()
    code, err = _finish(first)
    assert baseline.returncode == 2 and second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert lines == [f"error: dictionary 'dup' is in use by another process (pid {first.pid}); wait for it to "
                     "finish or choose another name"]
    # refused at once, not made to wait: it ended while this process still held the store (a run that reached
    # the store would have waited for it, and said so). That it is refused before torch is even imported is
    # tests/unit/cli/test_startup.py's; wall times on a shared machine vary by seconds: printed, not compared.
    assert "waiting for the store" not in second.stderr
    print(f"refused in {second_s:.1f} s; a run refused on its options took {baseline_s:.1f} s")
    assert code == 0, err
    assert [r[3] for r in store_rows(ws / "sparsescope.duckdb", "training_runs", "dictionary = 'dup'")] == \
        ["finished"]
