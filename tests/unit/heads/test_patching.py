"""Activation patching against a brute-force hook patch on the tiny model, its endpoints and its bad input."""
import pytest
import torch

from analysis.heads.patching import activation_patching, answer_id, logit_diff
from store.errors import InputError

CLEAN, CORRUPTED = "abcXdef", "abcYdef"  # byte tokens: one position differs (4, after BOS)
ANSWER, WRONG = "g", "h"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def result(tiny_model):
    return activation_patching(tiny_model, CLEAN, CORRUPTED, ANSWER, WRONG)


def _brute_force_head(model, layer: int, head: int) -> float:
    """Corrupted run with head (layer, head)'s z at every position overwritten by its clean value, normalised."""
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    good, bad = model.to_single_token(ANSWER), model.to_single_token(WRONG)
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        corrupted_logits = model(corrupted)

        def patch(z, hook):  # z: [batch, pos, n_heads, d_head]
            z[:, :, head] = cache[name][:, :, head]
            return z

        model.add_hook(name, patch)
        try:
            patched = model(corrupted)
        finally:
            model.reset_hooks()

    def diff(logits):
        return float(logits[0, -1, good] - logits[0, -1, bad])

    return (diff(patched) - diff(corrupted_logits)) / (diff(clean_logits) - diff(corrupted_logits))


def test_head_heatmap_equals_a_brute_force_patch(tiny_model, result):
    assert result.heads.shape == (tiny_model.cfg.n_layers, tiny_model.cfg.n_heads)
    for layer, head in ((0, 0), (0, 3), (1, 2)):
        assert result.heads[layer, head] == pytest.approx(_brute_force_head(tiny_model, layer, head), abs=1e-5)
    assert not any(point.fwd_hooks for point in tiny_model.hook_dict.values())  # no hook left behind


def test_endpoints_are_one_and_zero(tiny_model, result):
    with torch.no_grad():
        clean_logits = tiny_model(tiny_model.to_tokens(CLEAN))
        corrupted_logits = tiny_model(tiny_model.to_tokens(CORRUPTED))
    good, bad = result.answer_id, result.wrong_id
    assert float(logit_diff(clean_logits, good, bad)) == pytest.approx(result.clean_diff, abs=1e-5)
    assert float(logit_diff(corrupted_logits, good, bad)) == pytest.approx(result.corrupted_diff, abs=1e-5)
    # entering layer 0 the streams differ only at the changed token: patching it there is the clean run (1),
    # patching any other position there changes nothing (0)
    assert result.resid.shape == (tiny_model.cfg.n_layers, len(result.clean_tokens))
    assert result.resid[0, 4] == pytest.approx(1.0, abs=1e-5)
    others = [p for p in range(result.resid.shape[1]) if p != 4]
    assert result.resid[0, others] == pytest.approx(0.0, abs=1e-5)
    assert result.clean_tokens[4] == "X" and result.corrupted_tokens[4] == "Y"


@pytest.mark.parametrize("clean, corrupted, answer, wrong, needle", [
    ("abc", "abcd", "g", "h", "the clean prompt has 4, the corrupted prompt 5"),
    (CLEAN, CORRUPTED, "gh", "h", "the answer 'gh' is 2 tokens"),
    (CLEAN, CORRUPTED, "g", "", "the wrong answer token is empty"),
    (CLEAN, CORRUPTED, "g", "g", "the same token"),
    (CLEAN, CLEAN, "g", "h", "the same logit difference"),
    ("", CORRUPTED, "g", "h", "the prompt is empty"),
])
def test_bad_input_is_one_line(tiny_model, clean, corrupted, answer, wrong, needle):
    with pytest.raises(InputError, match=needle):
        activation_patching(tiny_model, clean, corrupted, answer, wrong)


def test_answer_id_is_the_single_token(tiny_model):
    assert answer_id(tiny_model, "g") == tiny_model.to_single_token("g")
