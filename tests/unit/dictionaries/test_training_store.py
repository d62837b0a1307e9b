"""store.dictionaries: typed rows for dictionaries, runs, training logs and metrics."""
import pytest

from store import InputError
from store import dictionaries as repo


def _row(name="d1", **overrides):
    fields = dict(name=name, model="tiny-random", hook="blocks.0.hook_resid_post", arch="topk", d_in=64,
                  d_sae=256, k=8, path=f"/ws/dictionaries/{name}")
    return repo.DictionaryRow(**(fields | overrides))


def test_add_get_list_require_delete(con):
    new_id = repo.add_dictionary(con, _row())
    repo.add_dictionary(con, _row("d2", k=None, arch="relu"))
    got = repo.get_dictionary(con, "d1")
    assert got.id == new_id and got.k == 8 and got.source == "trained" and got.created is not None
    assert [d.name for d in repo.list_dictionaries(con)] == ["d1", "d2"]
    assert repo.require_dictionary(con, "d2").k is None
    with pytest.raises(InputError, match=r"unknown dictionary 'nope' \(known: d1, d2\)"):
        repo.require_dictionary(con, "nope")
    with pytest.raises(InputError, match="already exists"):
        repo.add_dictionary(con, _row())
    repo.set_metrics(con, "d1", {"fvu": 0.2})
    repo.delete_dictionary(con, "d1")
    assert repo.get_dictionary(con, "d1") is None and repo.get_metrics(con, "d1") == {}


@pytest.mark.parametrize("name", ["", "a b", "../x", "-lead", "x" * 129, "a;DROP"])
def test_bad_names_are_rejected(con, name):
    with pytest.raises(InputError, match="dictionary name"):
        repo.add_dictionary(con, _row(name))


def test_runs_log_and_metrics(con):
    repo.start_run(con, "d1", "r1", {"lr": 1e-3})
    assert repo.get_run(con, "d1")["status"] == "running"
    repo.start_run(con, "d1", "r1", {"lr": 1e-3})  # a resumed run keeps its row
    rows = [repo.LogRow(step=i, tokens=100 * (i + 1), loss=1.0 / (i + 1), fvu=0.5, l0=8.0, dead=0.0)
            for i in range(5)]
    repo.add_log(con, "d1", "r1", rows)
    repo.add_log(con, "d1", "r1", rows[-1:])  # re-logging a step replaces it
    assert repo.get_log(con, "d1") == rows
    repo.finish_run(con, "d1", "r1")
    run = repo.get_run(con, "d1")
    assert run["status"] == "finished" and run["config"] == {"lr": 1e-3} and run["finished"] is not None
    hist = repo.histogram_metrics("l0", [0, 4, 8], [0.25, 0.75])
    repo.set_metrics(con, "d1", {"fvu": 0.1, "ce_recovered": float("nan"), "kl": None} | hist)
    metrics = repo.get_metrics(con, "d1")
    assert metrics["fvu"] == 0.1 and metrics["ce_recovered"] is None and metrics["kl"] is None
    assert repo.get_histogram(con, "d1", "l0") == [(0.0, 4.0, 0.25), (4.0, 8.0, 0.75)]


def test_values_are_bound_not_pasted(con):
    evil = "x'); DROP TABLE dictionaries; --"
    repo.start_run(con, evil, "r", {})
    repo.set_metrics(con, evil, {"it's": 1.0})
    assert repo.get_metrics(con, evil) == {"it's": 1.0}
    assert repo.list_dictionaries(con) == []
