"""`sparsescope import saelens:RELEASE/ID` and a TransformerLens model name (gpt2), for real and offline: the test
builds a Hugging Face cache (a tiny GPT-2 as `gpt2`, a SAELens SAE in a hub repo, a release naming it) and runs
the CLI in a process with HF_HUB_OFFLINE=1; nothing is downloaded."""
import pytest
import torch

from store import connect
from tests.helpers import error_line
from tests.hf_cache import offline_env, releases_env, run_offline, saelens_release, tiny_gpt2

HOOK = "blocks.0.hook_resid_post"
RELEASES = {
    "tiny-gpt2-res": {"repo_id": "acme/tiny-gpt2-saes", "model": "gpt2", "saes": [{"id": HOOK, "path": "res/l0"}]},
    "pythia-res": {"repo_id": "acme/pythia-saes", "model": "pythia-70m", "saes": [{"id": HOOK, "path": "l0"}]},
}


def _sae(model: str, d_in: int):
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=96))
    sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name = model, HOOK
    return sae


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    env = offline_env(root)
    tiny_gpt2(env)
    saelens_release(env, "acme/tiny-gpt2-saes", "res/l0", _sae("gpt2", 64))
    saelens_release(env, "acme/pythia-saes", "l0", _sae("pythia-70m", 512))  # its model is not in the cache
    text = root / "text.txt"
    text.write_text("\n\n".join(f"Line {i}: a small corpus for a tiny GPT-2 model." * 2 for i in range(30)))
    return releases_env(env, RELEASES), text


def test_saelens_release_and_transformerlens_name_offline(hub, tmp_path):
    env, text = hub
    ws = str(tmp_path / "ws")
    name = f"tiny-gpt2-res_{HOOK}"
    corpus, imported, analysed, unknown_id, uncached_model = run_offline(
        env, ["corpus", "add", "small", "--source", str(text), "--model", "gpt2", "--ctx", "32", "-w", ws],
        ["import", f"saelens:tiny-gpt2-res/{HOOK}", "--corpus", "small", "--eval-tokens", "320", "-w", ws],
        ["analyze", name, "--corpus", "small", "--tokens", "320", "--examples", "2", "--quantiles", "2", "-w", ws],
        ["import", "saelens:tiny-gpt2-res/blocks.1.hook_resid_post", "--name", "other", "-w", ws],
        ["import", f"saelens:pythia-res/{HOOK}", "--name", "other", "-w", ws])
    assert corpus[0] == 0, corpus[2]
    code, out, err = imported
    assert code == 0, err
    assert f"imported {name} (relu, d_in=64, d_sae=96)" in out and "FVU" in out and "CE recovered" in out
    assert "evaluated on 310 tokens of corpus small (gpt2 forward)" in out
    assert analysed[0] == 0 and "features fire" in analysed[1], analysed[2]
    assert unknown_id[0] == 2 and "cannot load saelens:tiny-gpt2-res/blocks.1.hook_resid_post from the SAELens " \
                                  "registry: ID blocks.1.hook_resid_post not found" in error_line(unknown_id[2])
    assert uncached_model[0] == 2
    assert error_line(uncached_model[2]).startswith("error: cannot load model 'pythia-70m' (EleutherAI/pythia-70m):")
    con = connect(tmp_path / "ws" / "sparsescope.duckdb", read_only=True)
    rows = con.execute("SELECT name, model, hook, source FROM dictionaries").fetchall()
    metrics = dict(con.execute("SELECT metric, value FROM dictionary_metrics WHERE dictionary = ?", [name]).fetchall())
    n_features = con.execute("SELECT count(*) FROM features WHERE dictionary = ?", [name]).fetchone()[0]
    con.close()
    assert rows == [(name, "gpt2", HOOK, f"saelens:tiny-gpt2-res/{HOOK}")]  # the failed imports wrote nothing
    assert {"fvu", "l0", "dead", "ce_recovered"} <= set(metrics) and n_features == 96
    assert not (tmp_path / "ws" / "dictionaries" / "other").exists()
