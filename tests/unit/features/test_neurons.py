"""Concept neurons: every output neuron decoded through the final norm and the unembedding (against a brute-force
product), the concept score on a hand-built case, and a planted neuron found first."""
from __future__ import annotations

import pytest
import torch

from analysis.features.analyze import residual_directions
from analysis.features.neurons import (
    concept_mask,
    concept_scores,
    concept_words,
    decode_layer,
    find_neurons,
    parse_layers,
)
from sae.dictionaries import neuron_dictionary
from store.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def _brute_force(model, layer: int) -> torch.Tensor:
    """[d_mlp, vocab] logit effects in float64: centre (LayerNorm), times the final norm's weight, times W_U."""
    W_out = model.blocks[layer].mlp.W_out.double()
    centred = W_out - W_out.mean(dim=1, keepdim=True)
    return (centred * model.ln_final.w.double()) @ model.W_U.double()


@pytest.fixture
def planted():
    """The tiny model with neuron 7 of layer 1 writing the directions of 'a' and 'b', and neuron 9 their opposite."""
    from tests.factories import seeded_tiny

    model = seeded_tiny()
    with torch.no_grad():
        model.ln_final.w.copy_(torch.linspace(0.5, 2.0, model.cfg.d_model))  # not all ones: it must be applied
        ids = [model.tokenizer.encode(t)[0] for t in ("a", "b")]
        direction = sum(torch.nn.functional.normalize(model.W_U[:, i], dim=0) for i in ids) / model.ln_final.w
        model.blocks[1].mlp.W_out[7] = 50 * direction
        model.blocks[1].mlp.W_out[9] = -50 * direction
    return model


@pytest.mark.parametrize("layer", [0, 1])
def test_decode_layer_equals_brute_force(tiny_model, layer):
    effects = _brute_force(tiny_model, layer)
    top_ids, top_vals, bottom_ids, bottom_vals = decode_layer(tiny_model, layer, tokens=5, block=100)
    expected_top = effects.topk(5, dim=1)
    expected_bottom = effects.topk(5, dim=1, largest=False)
    torch.testing.assert_close(top_vals.double(), expected_top.values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bottom_vals.double(), expected_bottom.values, rtol=1e-4, atol=1e-4)
    assert torch.equal(top_ids, expected_top.indices) and torch.equal(bottom_ids, expected_bottom.indices)


def test_the_dashboards_logit_effects_are_the_same_decoding(tiny_model):
    # analysis maps a hook_post dictionary's rows through the model's W_out: for the identity, W_out itself
    sae = neuron_dictionary(tiny_model, 1)
    directions = residual_directions(sae, tiny_model, sae.cfg.metadata.hook_name)
    assert torch.equal(directions, tiny_model.blocks[1].mlp.W_out.detach())


def test_concept_score_on_a_hand_built_case():
    vocab = [" Dog", "dogs", " cat", "catalog", "Cats ", " the", "hot dog", ""]
    mask = concept_mask(vocab, concept_words("dog, CAT"))
    assert mask.tolist() == [True, True, True, False, True, False, False, False]
    ids = torch.tensor([[0, 1, 5, 3], [5, 3, 6, 2]])
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    share, mass = concept_scores(ids, logits, mask)
    assert share.tolist() == [0.5, 0.25]
    softmax = torch.softmax(logits[0], dim=0)
    torch.testing.assert_close(mass, torch.stack([softmax[0] + softmax[1], softmax[3]]))


def test_the_planted_neuron_is_found_first_on_both_signs(planted):
    result = find_neurons(planted, [0, 1], "a b", top=2)
    assert result.neurons == 2 * planted.cfg.d_mlp
    first, second = result.hits
    assert {(first.layer, first.neuron, first.sign), (second.layer, second.neuron, second.sign)} == {
        (1, 7, "+"), (1, 9, "-")}
    assert set(first.tokens[:2]) == {"a", "b"} and first.logits[0] > 0 and second.logits[0] > 0
    assert first.mass > 0.99


@pytest.mark.parametrize("text, message", [("", "expected L or A-B"), ("5-2", "the first layer is after the last"),
                                           ("1-x", "expected L or A-B")])
def test_bad_layer_ranges_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_layers(text)
    assert parse_layers(" 3-5 ") == [3, 4, 5] and parse_layers("2") == [2]


def test_bad_find_inputs_are_refused(tiny_model):
    with pytest.raises(InputError, match="needs at least one word"):
        find_neurons(tiny_model, [0], " , ")
    with pytest.raises(InputError, match="layer 2 is out of range"):
        find_neurons(tiny_model, [1, 2], "a")
