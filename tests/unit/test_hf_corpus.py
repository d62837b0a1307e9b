"""`hf:NAME[:CONFIG][:SPLIT]` corpora: the name is parsed, and with HF_HUB_OFFLINE=1 a dataset is read from the
local datasets cache (built here from local text, nothing downloaded); one missing from it is one error line."""
import time

import pytest

from sae.corpus import HFSource, documents, parse_hf
from store import connect
from store.errors import InputError
from tests.helpers import error_line
from tests.hf_cache import cached_dataset, offline_env, run_offline

NEEDS_DATASETS = "hf: corpora need the `datasets` package (make setup installs it with the test extras)"


@pytest.mark.parametrize("source, parsed", [
    ("hf:wikitext", HFSource("wikitext")),
    ("hf:wikitext:wikitext-2-raw-v1", HFSource("wikitext", "wikitext-2-raw-v1")),
    ("hf:wikitext:wikitext-2-raw-v1:validation", HFSource("wikitext", "wikitext-2-raw-v1", "validation")),
    ("hf:owner/name::test", HFSource("owner/name", None, "test")),
])
def test_hf_sources_are_parsed(source, parsed):
    assert parse_hf(source) == parsed


@pytest.mark.parametrize("source", ["hf:", "hf::cfg", "hf:a:b:c:d"])
def test_malformed_hf_sources_fail_before_reading(source):
    with pytest.raises(InputError, match=r"expected hf:NAME\[:CONFIG\]\[:SPLIT\]"):
        documents(source)


@pytest.fixture(scope="module")
def hf_env(tmp_path_factory):
    pytest.importorskip("datasets", reason=NEEDS_DATASETS)
    env = offline_env(tmp_path_factory.mktemp("hf"))
    cached_dataset(env, "wikitext", "wikitext-2-raw-v1",
                   {"train": [f"training line {i}: the quick brown fox. " * 4 for i in range(40)],
                    "validation": [f"validation line {i}: a lazy dog. " * 4 for i in range(40)]})
    return env


def _corpora(ws):
    if not (ws / "sparsescope.duckdb").exists():
        return []
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    try:
        return con.execute("SELECT name, source, n_contexts FROM corpora ORDER BY name").fetchall()
    finally:
        con.close()


def test_hf_corpus_offline_from_the_datasets_cache_and_a_missing_one_is_one_line(hf_env, tmp_path):
    ws, other = tmp_path / "ws", tmp_path / "other"
    start = time.monotonic()
    (code, _, err), (missing_code, _, missing_err) = run_offline(
        hf_env, ["corpus", "add", "val", "--source", "hf:wikitext:wikitext-2-raw-v1:validation", "--model",
                 "tiny-random", "--ctx", "32", "-w", str(ws)],
        ["corpus", "add", "c", "--source", "hf:no-such-dataset", "--model", "tiny-random", "-w", str(other)],
        timeout=300)
    assert code == 0, err
    [(name, source, n)] = _corpora(ws)
    assert (name, source) == ("val", "hf:wikitext:wikitext-2-raw-v1:validation") and n > 10
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    text = con.execute("SELECT string_agg(text, '') FROM contexts WHERE corpus = 'val'").fetchone()[0]
    con.close()
    assert "validation line" in text and "training line" not in text  # the split asked for, not train
    assert missing_code == 2, missing_err
    assert error_line(missing_err) == ("error: corpus source hf:no-such-dataset: the Hub is offline "
                                       "(HF_HUB_OFFLINE) and it is not in the local datasets cache")
    assert _corpora(other) == []
    assert time.monotonic() - start < 280  # no network wait: a missing dataset fails as soon as the cache is read


def test_an_unknown_config_or_split_is_the_first_line_of_datasets_message(monkeypatch):
    datasets = pytest.importorskip("datasets", reason=NEEDS_DATASETS)

    def load_dataset(name, config, split, streaming):
        raise ValueError(f'Unknown split "{split}". Should be one of [\'train\'].\nmore detail')

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(InputError) as info:
        list(documents("hf:wikitext:wikitext-2-raw-v1:nosplit"))
    assert str(info.value) == ('corpus source hf:wikitext:wikitext-2-raw-v1:nosplit: Unknown split "nosplit". '
                               "Should be one of ['train'].")
