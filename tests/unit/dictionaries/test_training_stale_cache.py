"""Training from a named activation cache refuses one made from other text than its corpus holds now: the CE
and KL contexts are read from the corpus at the cache's held-out context ids."""
import json

import pytest

from analysis.activations import build_cache
from analysis.corpora import add_corpus
from analysis.training import TrainRequest, plan_training
from sae.activations import MANIFEST
from store import InputError
from store.dictionaries import list_dictionaries

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture
def cache(tiny_model, con, ws, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of the test corpus says something new.\n\n" for i in range(100)))
    add_corpus(con, "t", str(src), "tiny-random", ctx=16)
    return build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 30, progress=False).path


def _set_fingerprint(folder, value):
    raw = json.loads((folder / MANIFEST).read_text())
    if value is None:
        del raw["corpus_fingerprint"]  # as written before caches recorded it
    else:
        raw["corpus_fingerprint"] = value
    (folder / MANIFEST).write_text(json.dumps(raw))


def test_a_current_cache_is_planned(con, ws, cache):
    plan = plan_training(ws, con, TrainRequest(arch="topk", activations=cache.name, name="x", d_sae=64, k=4))
    assert plan.source.kind == "cache"


@pytest.mark.parametrize("value, needle", [("0" * 64, "earlier text of corpus 't'"),
                                           (None, "predates corpus fingerprints")])
def test_a_cache_of_other_text_is_refused_with_the_rebuild_command(con, ws, cache, value, needle):
    _set_fingerprint(cache, value)
    with pytest.raises(InputError, match=needle) as refused:
        plan_training(ws, con, TrainRequest(arch="topk", activations=cache.name, name="x", d_sae=64, k=4))
    assert f"sparsescope activations --model tiny-random --hook {HOOK} --corpus t --tokens 480" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert list_dictionaries(con) == []
