"""analysis.features.inspector: run the tiny model on a prompt and read it with every dictionary on the hook."""
import numpy as np
import pytest
import torch

from analysis.features.inspector import inspect_prompt, read_dictionary, site_activations
from sae.dictionaries import codebook_code_ids
from store.errors import InputError

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def dictionaries():
    from sae_lens import StandardSAE, StandardSAEConfig

    from sae.dictionaries import DictSpec, build_training_sae

    torch.manual_seed(0)
    return {"relu": StandardSAE(StandardSAEConfig(d_in=64, d_sae=128)),
            "topk": build_training_sae(DictSpec("topk", d_in=64, d_sae=128, k=8)),
            "mp": build_training_sae(DictSpec("mp", d_in=64, d_sae=128, k=4)),
            "codebook": build_training_sae(DictSpec("codebook", d_in=64, d_sae=96, k=3))}


def test_tokens_and_activations_match_a_direct_run(tiny_model):
    ids, acts, truncated = site_activations(tiny_model, HOOK, "Hello world")
    assert ids.tolist() == tiny_model.to_tokens("Hello world")[0].tolist() and not truncated
    _, cache = tiny_model.run_with_cache("Hello world", names_filter=HOOK)
    assert torch.allclose(acts, cache[HOOK][0])


def test_every_dictionary_reads_the_prompt(tiny_model, dictionaries):
    result = inspect_prompt(tiny_model, HOOK, "The cat sat.", dictionaries, n_top=5)
    assert result.tokens == [tiny_model.tokenizer.decode([t]) for t in result.token_ids]
    assert result.has_bos and "".join(result.tokens[1:]) == "The cat sat."  # BOS first, then the text back
    assert set(result.readings) == set(dictionaries)
    _, acts, _ = site_activations(tiny_model, HOOK, "The cat sat.")
    direct = dictionaries["topk"].encode(acts).detach()
    topk = result.readings["topk"]
    assert topk.ids.shape == (len(result.tokens), 5)
    assert np.allclose(topk.acts[:, 0], direct.max(dim=1).values.numpy(), atol=1e-5)
    assert ((topk.ids >= 0).sum(axis=1) <= 5).all()
    feature, value = topk.strongest()
    fired = topk.ids[:, 0] >= 0
    assert np.allclose(direct[np.nonzero(fired)[0], feature[fired]].numpy(), value[fired], atol=1e-5)


def test_mp_reads_at_most_k_atoms_and_codebook_exactly_k(tiny_model, dictionaries):
    _, acts, _ = site_activations(tiny_model, HOOK, "matching pursuit")
    mp = read_dictionary(dictionaries["mp"], acts, n_top=10)
    assert ((mp.ids >= 0).sum(axis=1) <= 4).all() and (mp.acts[mp.ids < 0] == 0).all()
    codes = read_dictionary(dictionaries["codebook"], acts, n_top=10)
    assert ((codes.ids >= 0).sum(axis=1) == 3).all()  # k codes on every token, best first
    chosen = codebook_code_ids(dictionaries["codebook"], acts)
    np.testing.assert_array_equal(codes.ids[:, :3], chosen.numpy())  # in the encoder's order
    assert (np.diff(codes.acts[:, :3], axis=1) <= 0).all() and (codes.acts[:, :3] <= 1 + 1e-6).all()


def test_bad_prompts_are_input_errors(tiny_model, dictionaries):
    with pytest.raises(InputError, match="empty"):
        inspect_prompt(tiny_model, HOOK, "   ", dictionaries)
    with pytest.raises(InputError, match="at most"):
        inspect_prompt(tiny_model, HOOK, "x" * 5000, dictionaries)
    with pytest.raises(InputError, match="d_in"):
        read_dictionary(dictionaries["topk"], torch.zeros(3, 10))


def test_long_prompts_are_cut_to_the_context(tiny_model):
    ids, _, truncated = site_activations(tiny_model, HOOK, "ab" * 200)
    assert truncated and len(ids) == tiny_model.cfg.n_ctx
