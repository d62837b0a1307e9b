"""Rerunning analyses does not grow the store: identical results are not rewritten, and replaced rows' blocks are
freed at once (DuckDB CHECKPOINT) for the next write to reuse."""
import json

from store import connect
from store.features import write_feature_stats
from tests.factories import REPORT_CORPUS, REPORT_DICTIONARIES, build_report_store, synthetic_feature_tables

N = 400


def _round(path, seeds: dict[str, int]) -> int:
    """Write every dictionary's results (a fresh connection each, as `analyze` does); the file's size after."""
    for name, seed in seeds.items():
        con = connect(path)
        try:
            write_feature_stats(con, name, REPORT_CORPUS, synthetic_feature_tables(N, seed=seed), n_tokens=400_000,
                                config={"examples": 20})
        finally:
            con.close()
    return path.stat().st_size


def test_reruns_with_identical_results_leave_the_file_as_it_is(tmp_path):
    path = tmp_path / "s.duckdb"
    con = connect(path)
    build_report_store(con, n_features=N)
    con.close()
    seeds = {name: 10 + i for i, name in enumerate(REPORT_DICTIONARIES)}
    first = _round(path, seeds)
    assert [_round(path, seeds) for _ in range(3)] == [first] * 3  # the old code rewrote them: the file grew
    con = connect(path, read_only=True)
    config = json.loads(con.execute("SELECT config FROM analyses WHERE dictionary = 'topk-demo'").fetchone()[0])
    con.close()
    assert config["examples"] == 20 and len(config["results_sha256"]) == 64
    _round(path, seeds | {"topk-demo": 99})  # different results are written
    con = connect(path, read_only=True)
    top = con.execute("SELECT max_act FROM features WHERE dictionary = 'topk-demo' ORDER BY feature LIMIT 3")
    assert [r[0] for r in top.fetchall()] == synthetic_feature_tables(N, seed=99)["features"]["max_act"][:3].to_pylist()
    con.close()
