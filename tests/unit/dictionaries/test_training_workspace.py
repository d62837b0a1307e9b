"""Training in a workspace: every source, the SAELens format, resume through the orchestration layer."""
import numpy as np
import pytest
import torch
from sae_lens import SAE

from analysis.activations import build_cache
from analysis.corpora import add_corpus
from analysis.training import TrainRequest, plan_training, train_dictionary
from sae.dictionaries import DictSpec, save_dictionary
from sae.sources import FileSource
from sae.training import train
from store import InputError
from store.dictionaries import get_log, get_metrics, get_run, list_dictionaries
from tests.factories import kill_training_at, sparse_activations, train_config

HOOK = "blocks.0.hook_resid_post"
FAST = dict(d_sae=128, k=4, tokens=1024, batch=256, lr=1e-2)


@pytest.fixture
def corpus(con, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of the test corpus says something new.\n\n" for i in range(300)))
    return add_corpus(con, "t", str(src), "tiny-random", ctx=16)


def test_stream_from_the_model(tiny_model, con, ws, corpus):
    req = TrainRequest(arch="topk", model="tiny-random", hook=HOOK, corpus="t", name="s", **FAST)
    row, metrics = train_dictionary(ws, con, req, lm=tiny_model, progress=False)
    assert (row.model, row.hook, row.d_in, row.d_sae) == ("tiny-random", HOOK, 64, 128)
    assert metrics["l0"] == 4 and 0 < metrics["fvu"] < 1.5
    assert {"ce_clean", "ce_sae", "ce_zero", "ce_recovered", "kl"} <= set(get_metrics(con, "s"))
    assert get_run(con, "s")["status"] == "finished" and [r.step for r in get_log(con, "s")] == [1, 4]
    assert not (ws.root / "checkpoints" / "s").exists() and (ws.dictionaries_dir / "s" / "cfg.json").is_file()


def test_train_from_a_cache_and_check_it(tiny_model, con, ws, corpus):
    cache = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 60, progress=False)
    row, metrics = train_dictionary(ws, con, TrainRequest(arch="codebook", activations=cache.path.name,
                                                          name="c", d_sae=32, k=2, tokens=512, batch=128),
                                    lm=tiny_model, progress=False)
    assert row.arch == "codebook" and row.hook == HOOK and metrics["l0"] == 2
    assert metrics["eval_tokens"] == 3 * 15  # the last 5% of 60 contexts, position 0 left out
    assert metrics["code_usage"] > 0 and "ce_recovered" in metrics
    for bad, needle in ((dict(d_in=32), "--d-in 32 does not match"), (dict(hook="blocks.1.hook_resid_post"),
                                                                        "does not match the activation cache")):
        with pytest.raises(InputError, match=needle):
            plan_training(ws, con, TrainRequest(arch="topk", activations=str(cache.path), name="x", **bad))
    assert [d.name for d in list_dictionaries(con)] == ["c"]


def test_resume_through_the_workspace(con, ws, tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    np.save(path, sparse_activations(2000))
    req = TrainRequest(arch="topk", activations=str(path), name="r", checkpoint_every=2, **FAST)
    kill_training_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_dictionary(ws, con, req, progress=False)
    monkeypatch.undo()
    assert get_run(con, "r")["status"] == "failed" and list_dictionaries(con) == []
    with pytest.raises(InputError, match="add --resume"):
        plan_training(ws, con, req)
    row, _ = train_dictionary(ws, con, TrainRequest(**(req.__dict__ | {"resume": True})), progress=False)
    straight, _ = train_dictionary(ws, con, TrainRequest(**(req.__dict__ | {"name": "straight"})),
                                   progress=False)
    assert [r.tokens for r in get_log(con, "r")] == [r.tokens for r in get_log(con, "straight")]
    a, b = SAE.load_from_disk(row.path), SAE.load_from_disk(straight.path)
    torch.testing.assert_close(a.W_dec, b.W_dec, rtol=1e-5, atol=1e-6)
    assert get_run(con, "r")["status"] == "finished"


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "mp", "codebook", "batchtopk"])
def test_saved_dictionary_loads_in_plain_saelens_with_the_same_encode(tmp_path, arch):
    from sae.dictionaries import load_dictionary

    path = tmp_path / "a.npy"
    np.save(path, sparse_activations(1000))
    config = train_config(arch=arch, d_sae=32, tokens=256 * 3, init_rows=512)
    result = train(DictSpec(arch, 16, 32, k=config.k), config, FileSource(path), progress=False)
    scale = result.state.scale
    save_dictionary(result.sae, tmp_path / "d", activation_scale=scale)
    plain = SAE.load_from_disk(tmp_path / "d")  # plain SAELens (`import sae` registered our classes)
    ours = load_dictionary(tmp_path / "d")
    x = torch.from_numpy(sparse_activations(64, seed=1))
    with torch.no_grad():
        encoded = plain.encode(x)
        torch.testing.assert_close(encoded, ours.encode(x), rtol=0, atol=0)
        if arch == "batchtopk":  # batch top-k in training, a learnt threshold at inference
            return
        trained = result.sae.encode(x * scale)
        # The same features fire; values match up to one constant (1, or 1/scale where the scale is folded
        # into the codes, as for mp and decoder-norm-rescaled topk), and the reconstruction is the training
        # dictionary's, back in raw units.
        assert torch.equal(encoded != 0, trained != 0)
        ratio = encoded[trained != 0] / trained[trained != 0]
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain.decode(encoded), result.sae.decode(trained) / scale, rtol=1e-4, atol=1e-4)
