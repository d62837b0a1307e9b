"""The neuron dictionary: encode is the MLP's hidden activations, decode gives them back, mlp_out is the layer's
output, and what it saves loads back (with plain SAELens) to the same numbers."""
from __future__ import annotations

import pytest
import torch
from sae_lens import SAE

from sae.dictionaries import NeuronsSAE, arch_of, load_dictionary, neuron_dictionary
from store.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")
LAYER = 1
PROMPT = "The cat sat on the mat, and the dog lay by the door."


def _cache(model):
    hooks = [f"blocks.{LAYER}.mlp.hook_post", f"blocks.{LAYER}.hook_mlp_out"]
    _, cache = model.run_with_cache(model.to_tokens(PROMPT), names_filter=hooks)
    return cache[hooks[0]][0], cache[hooks[1]][0]  # [pos, d_mlp], [pos, d_model]


def test_encode_is_the_hidden_activations_and_decode_gives_them_back(tiny_model):
    sae = neuron_dictionary(tiny_model, LAYER)
    hidden, _ = _cache(tiny_model)
    assert sae.cfg.metadata.hook_name == f"blocks.{LAYER}.mlp.hook_post"
    assert sae.cfg.d_in == sae.cfg.d_sae == tiny_model.cfg.d_mlp
    acts = sae.encode(hidden)
    assert torch.equal(acts, hidden)  # exactly: feature i is neuron i
    assert torch.equal(sae.decode(acts), hidden) and torch.equal(sae(hidden), hidden)
    assert torch.equal(sae.W_dec, torch.eye(tiny_model.cfg.d_mlp))


def test_mlp_out_is_the_layers_output_contribution(tiny_model):
    sae = neuron_dictionary(tiny_model, LAYER)
    hidden, mlp_out = _cache(tiny_model)
    mlp = tiny_model.blocks[LAYER].mlp
    assert torch.equal(sae.W_out, mlp.W_out) and torch.equal(sae.b_out, mlp.b_out)
    # b_out is added once, whatever the neurons do: the output of all-zero activations
    assert torch.equal(sae.mlp_out(torch.zeros(1, sae.cfg.d_sae))[0], mlp.b_out)
    torch.testing.assert_close(sae.mlp_out(sae.encode(hidden)), mlp_out, rtol=1e-5, atol=1e-5)
    by_hand = (hidden.double() @ mlp.W_out.double() + mlp.b_out.double()).float()
    torch.testing.assert_close(sae.mlp_out(hidden), by_hand, rtol=1e-5, atol=1e-6)


def test_saved_weights_load_back_in_plain_saelens(tiny_model, tmp_path):
    sae = neuron_dictionary(tiny_model, LAYER)
    sae.save_model(tmp_path / "n")
    for loaded in (SAE.load_from_disk(tmp_path / "n"), load_dictionary(tmp_path / "n")):
        assert isinstance(loaded, NeuronsSAE) and arch_of(loaded).name == "neurons"
        assert torch.equal(loaded.W_out, sae.W_out) and torch.equal(loaded.W_dec, sae.W_dec)
        hidden, _ = _cache(tiny_model)
        assert torch.equal(loaded.encode(hidden), hidden)


@pytest.mark.parametrize("layer", [-1, 2, True])
def test_a_layer_the_model_lacks_is_refused(tiny_model, layer):
    with pytest.raises(InputError, match="out of range: tiny-random has layers 0..1"):
        neuron_dictionary(tiny_model, layer)


def test_neurons_are_not_trained():
    from sae.dictionaries import DictSpec

    with pytest.raises(InputError, match=r"neurons dictionaries are not trained \(`sparsescope neurons add`"):
        DictSpec("neurons", 16, 16)
