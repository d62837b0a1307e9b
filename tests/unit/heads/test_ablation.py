"""Head ablation, the 'which heads matter' ranking, a head's pattern on a prompt, and their input checks."""
import numpy as np
import pytest
import torch

from analysis.heads.ablation import ablate_head, mean_head_outputs, means_array
from analysis.heads.prompt import head_pattern, top_sources
from analysis.heads.rank import rank_heads
from store.errors import InputError
from tests.factories import seeded_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPT = "The cat sat on the mat, and the cat"


@pytest.fixture(scope="module")
def model():
    return seeded_tiny()


def _zeroed_logits(model, prompt: str, layer: int, head: int):
    def zero(z, hook):
        z[:, :, head] = 0.0
        return z
    with torch.inference_mode():
        return model.run_with_hooks(model.to_tokens(prompt), fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])


def test_head_pattern_is_a_causal_distribution_with_token_labels(model):
    result = head_pattern(model, PROMPT, 1, 2)
    n = len(result.tokens)
    assert result.pattern.shape == (n, n) and result.tokens[0] == "<|endoftext|>"
    np.testing.assert_allclose(result.pattern.sum(1), 1.0, atol=1e-5)
    assert np.triu(result.pattern, 1).max() == 0
    assert all(src <= dest for dest, row in enumerate(top_sources(result.pattern)) for src, _ in row)


def test_zero_ablation_changes_the_loss_and_predictions(model):
    result = ablate_head(model, PROMPT, 0, 1, "zero")
    assert result.loss_ablated != pytest.approx(result.loss_clean, abs=1e-6)
    assert any(p.prob_clean != pytest.approx(p.prob_ablated, abs=1e-7) for p in result.top_clean)
    expected = _zeroed_logits(model, PROMPT, 0, 1)[0, -1].softmax(-1)
    top = result.top_ablated[0]
    assert top.prob_ablated == pytest.approx(float(expected.max()), abs=1e-6)


def test_path_ablation_equals_zero_ablation_in_the_last_layer_and_differs_below(model):
    """Without MLPs, the last layer's heads reach the logits only directly, so both ablations agree there."""
    attn_only = seeded_tiny(attn_only=True)
    last = attn_only.cfg.n_layers - 1
    zero, path = (ablate_head(attn_only, PROMPT, last, 3, mode) for mode in ("zero", "path"))
    assert path.loss_ablated == pytest.approx(zero.loss_ablated, abs=1e-5)
    assert path.loss_ablated != pytest.approx(path.loss_clean, abs=1e-6)
    zero0, path0 = ablate_head(model, PROMPT, 0, 3, "zero"), ablate_head(model, PROMPT, 0, 3, "path")
    assert path0.loss_ablated != pytest.approx(zero0.loss_ablated, abs=1e-6)


def test_mean_ablation_uses_the_head_means(model):
    means = np.zeros((model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head), dtype=np.float32)
    as_zero = ablate_head(model, PROMPT, 1, 0, "mean", mean_z=means)
    assert as_zero.loss_ablated == pytest.approx(ablate_head(model, PROMPT, 1, 0, "zero").loss_ablated, abs=1e-6)
    real = mean_head_outputs(model, model.to_tokens(["some text here", "other text here"]))
    assert real.shape == means.shape and np.abs(real).sum() > 0
    rows = {(layer, head): real[layer, head].tolist() for layer in range(2) for head in range(4)}
    np.testing.assert_array_equal(means_array(model, rows), real)
    assert means_array(model, {}) is None
    with pytest.raises(InputError, match="mean outputs"):
        ablate_head(model, PROMPT, 1, 0, "mean")


def test_ranking_batches_every_head_like_single_ablations(model):
    ranking = rank_heads(model, PROMPT)
    assert len(ranking.effects) == model.cfg.n_layers * model.cfg.n_heads
    assert ranking.target_id == int(model(model.to_tokens(PROMPT))[0, -1].argmax())
    deltas = [abs(e.logit_delta) for e in ranking.effects]
    assert deltas == sorted(deltas, reverse=True)
    with torch.inference_mode():
        clean = model(model.to_tokens(PROMPT))[0, -1, ranking.target_id]
    for effect in ranking.effects:
        ablated = _zeroed_logits(model, PROMPT, effect.layer, effect.head)[0, -1, ranking.target_id]
        assert effect.logit_delta == pytest.approx(float(ablated - clean), abs=1e-4)


def test_the_head_that_writes_the_target_ranks_first():
    """Only head 1.2 writes much into the residual stream: z = 1 everywhere (W_V = 0, b_V = 1) and W_O maps it
    onto the target's unembedding direction, so removing it must lower the target logit most."""
    model = seeded_tiny()
    target = model.to_single_token("x")
    with torch.no_grad():
        model.blocks[0].attn.W_O.mul_(0.01)
        model.blocks[1].attn.W_O.mul_(0.01)
        model.blocks[1].attn.W_V[2] = 0.0
        model.blocks[1].attn.b_V[2] = 1.0
        model.blocks[1].attn.W_O[2] = model.W_U[:, target][None, :].expand(model.cfg.d_head, -1) * 0.5
    ranking = rank_heads(model, PROMPT, target="x")
    first = ranking.effects[0]
    assert (first.layer, first.head) == (1, 2) and first.logit_delta < 0
    assert abs(first.logit_delta) > 10 * abs(ranking.effects[1].logit_delta)


def test_ranking_with_gqa_reports_kv_groups():
    model = seeded_tiny(n_key_value_heads=2)
    ranking = rank_heads(model, PROMPT, position=3)
    assert ranking.position == 3
    assert {(e.head, e.kv_group) for e in ranking.effects} == {(0, 0), (1, 0), (2, 1), (3, 1)}


@pytest.mark.parametrize("call, needle", [
    (lambda m: head_pattern(m, PROMPT, 2, 0), "layer 2 is out of range: tiny-random has layers 0..1"),
    (lambda m: head_pattern(m, PROMPT, 0, 4), "head 4 is out of range"),
    (lambda m: head_pattern(m, PROMPT, -1, 0), "layer -1 is out of range"),
    (lambda m: head_pattern(m, "   ", 0, 0), "the prompt is empty"),
    (lambda m: head_pattern(m, "a" * 400, 0, 0), "beyond the model's context of 256 tokens"),
    (lambda m: ablate_head(m, PROMPT, 0, 0, "half"), "unknown ablation mode"),
    (lambda m: ablate_head(m, "", 0, 0), "the prompt is empty"),
    (lambda m: rank_heads(m, PROMPT, target="two tokens"), "give exactly one token"),
    (lambda m: rank_heads(m, PROMPT, position=99), "outside the prompt"),
    (lambda m: rank_heads(m, "a" * 400), "beyond the model's context"),
])
def test_bad_input_raises_one_clear_message(model, call, needle):
    with pytest.raises(InputError, match=needle):
        call(model)
