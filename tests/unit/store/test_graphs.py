import pytest

from store import graphs as repo
from store.errors import InputError


def _graph(extra_link=None):
    nodes = [{"node_id": "d:3@1", "feature_type": "feature", "dictionary": "d", "hook": "blocks.0.hook_resid_post",
              "layer": 0, "feature": 3, "ctx_idx": 1, "token": " Paris", "activation": 2.5, "attribution": 1.5},
             {"node_id": "d:error@1", "feature_type": "error", "dictionary": "d", "hook": "blocks.0.hook_resid_post",
              "layer": 0, "feature": None, "ctx_idx": 1, "token": " Paris", "activation": 0.0, "attribution": 0.2},
             {"node_id": "logit", "feature_type": "logit", "dictionary": None, "hook": None, "layer": None,
              "feature": None, "ctx_idx": 1, "token": " France", "activation": 0.0, "attribution": 1.7}]
    links = [{"source": "d:3@1", "target": "logit", "weight": 1.5}] + ([extra_link] if extra_link else [])
    return {"metadata": {"prompt": "in Paris", "target": " France"}, "nodes": nodes, "links": links}


def _save(con, graph, ablation="mean"):
    return repo.save_graph(con, model="tiny-random", prompt="in Paris", target=" France", contrast=None,
                           dictionaries=["d"], metric=1.7, recovered=0.9, top_removed=0.4, ablation=ablation,
                           graph=graph)


def test_a_graph_round_trips_with_its_counts(con):
    first = _save(con, _graph())
    second = _save(con, _graph(), ablation="zero")
    assert second > first
    assert [g.id for g in repo.list_graphs(con)] == [second, first]
    row, doc = repo.get_graph(con, first)
    assert (row.n_nodes, row.n_links, row.dictionaries, row.recovered, row.ablation) == (3, 1, ["d"], 0.9, "mean")
    assert doc == _graph()
    assert repo.delete_graph(con, first) and not repo.delete_graph(con, first)
    assert repo.get_graph(con, first) is None


@pytest.mark.parametrize("graph, ablation, message", [
    (_graph({"source": "d:3@1", "target": "nowhere", "weight": 1.0}), "mean", "names a node the graph lacks"),
    ({"nodes": [], "links": []}, "mean", "has no 'metadata'"),
    (_graph(), "resample", "ablation must be one of mean, zero"),
])
def test_a_malformed_graph_is_refused_and_nothing_is_written(con, graph, ablation, message):
    with pytest.raises(InputError, match=message):
        _save(con, graph, ablation)
    assert repo.list_graphs(con) == []
