"""The geometric steering modes (orthogonal, cap) against hand computations, several interventions at one hook
against applying them in sequence, and nucleus sampling's coupling between arms."""
from __future__ import annotations

import pytest
import torch

from analysis.steering.config import MODES, SteerConfig
from analysis.steering.generate import Sampling, sample
from analysis.steering.lab import Intervention, SteerRun, steer, sweep
from analysis.steering.runs import parse_stored, stored_config
from analysis.steering.targets import DirectionTarget
from store.errors import InputError
from tests.factories import TINY_HOOK as HOOK

NEXT = "blocks.1.hook_resid_pre"  # the residual after block 0: what our hook at HOOK returned
PROMPT = "The cat sat on"

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(*interventions, **kw) -> SteerConfig:
    kw = {"prompt": PROMPT, "chat": False, "model": "tiny-random", "max_new_tokens": 4, **kw}
    return SteerConfig(interventions=tuple(interventions), **kw)


def _before_after(model, dicts, *interventions) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [pos, d_in] at HOOK before our edits and after them, on the prompt (one steered forward)."""
    run = SteerRun(model, _config(*interventions), dicts, arms=("steered",), measured=False)
    seen = {}

    def record(name):
        def hook_fn(act, hook):  # returns None: a recorder must not replace the activation
            seen.setdefault(name, act[0].clone())
        return hook_fn

    recorders = [(HOOK, record("pre")), (NEXT, record("post"))]
    run.state.active = True
    with torch.no_grad(), model.hooks(fwd_hooks=recorders), model.hooks(fwd_hooks=run.hooks):
        model(model.to_tokens(PROMPT))  # the recorder at HOOK is registered first: it sees x unedited
    return seen["pre"], seen["post"]


# ------------------------------------------------------------------------------------------- hook math

def test_orthogonal_and_cap_match_a_hand_computation():
    target = DirectionTarget(torch.tensor([3.0, 4.0, 0.0]), HOOK)  # unit direction (0.6, 0.8, 0)
    x = torch.tensor([[1.0, 2.0, 5.0],     # x.d = 2.2
                      [-1.0, 0.5, 2.0]])   # x.d = -0.2
    rescaled = target.rescale(x, 3.0)      # x + (3 - 1)(x.d)d
    torch.testing.assert_close(rescaled, torch.tensor([[3.64, 5.52, 5.0], [-1.24, 0.18, 2.0]]))
    torch.testing.assert_close(target.rescale(x, 0.0), torch.tensor([[-0.32, 0.24, 5.0], [-0.88, 0.66, 2.0]]))
    capped = target.cap(x, 1.0)            # x - max(0, x.d - 1)d: only the first row is over
    torch.testing.assert_close(capped[0], torch.tensor([0.28, 1.04, 5.0]))
    assert torch.equal(capped[1], x[1])    # under the cap: bit for bit
    assert torch.equal(target.rescale(x, 1.0), x)


@pytest.mark.parametrize("arch", ["topk", "relu", "mp", "codebook"])
def test_the_modes_act_along_the_feature_direction(tiny_model, dicts, arch):
    target = dicts[arch].target(5)
    unit = target.unit.to(torch.float32)
    assert abs(float(unit.norm()) - 1.0) < 1e-5
    pre, post = _before_after(tiny_model, dicts, Intervention("orthogonal", dictionary=arch, feature=5, strength=-0.5))
    along = pre @ unit
    expected = pre - along[:, None] * unit + (-0.5 * along)[:, None] * unit  # (I - P)x + s Px by hand
    torch.testing.assert_close(post, expected, atol=1e-5, rtol=1e-5)
    cap = float(along.median())
    pre, post = _before_after(tiny_model, dicts, Intervention("cap", dictionary=arch, feature=5, value=cap))
    expected = pre - (along - cap).clamp(min=0)[:, None] * unit
    torch.testing.assert_close(post, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post @ unit, along.clamp(max=cap), atol=1e-5, rtol=1e-5)
    under = along <= cap
    assert under.any() and (~under).any() and torch.equal(post[under], pre[under])


def test_orthogonal_at_one_and_cap_above_everything_change_nothing(tiny_model, dicts):
    for spec in (Intervention("orthogonal", dictionary="topk", feature=3, strength=1.0),
                 Intervention("cap", dictionary="relu", feature=3, value=1e9)):
        result = steer(tiny_model, _config(spec, samples=2, temperature=1.0), dicts)
        assert result.steered_ids == result.default_ids and result.measures["kl_mean"] == 0.0


def test_several_interventions_apply_in_sequence(tiny_model, dicts):
    direction = tuple(float(v) for v in torch.linspace(-1, 1, 64))
    specs = (Intervention("add", dictionary="topk", feature=3, strength=2.0),
             Intervention("orthogonal", direction=direction, hook=HOOK, strength=0.25),
             Intervention("cap", dictionary="mp", feature=1, value=0.0),
             Intervention("clamp", dictionary="relu", feature=2, value=3.0))
    run = SteerRun(tiny_model, _config(*specs), dicts, measured=False)
    pre, post = _before_after(tiny_model, dicts, *specs)
    expected = pre
    for bound in run.bound:  # one edit after the other, each reading what the previous one left
        t = bound.target
        expected = {"add": lambda: t.add(expected, bound.amount), "orthogonal": lambda: t.rescale(expected, 0.25),
                    "cap": lambda: t.cap(expected, 0.0), "clamp": lambda: t.clamp(expected, 3.0)}[bound.spec.mode]()
    torch.testing.assert_close(post, expected, atol=1e-5, rtol=1e-5)
    _, reversed_post = _before_after(tiny_model, dicts, *reversed(specs))
    assert not torch.allclose(reversed_post, post, atol=1e-3)  # the order is part of the definition


def test_the_new_modes_are_measured_and_stored(tiny_model, dicts):
    config = _config(Intervention("orthogonal", dictionary="topk", feature=3, strength=-3.0),
                     Intervention("cap", dictionary="mp", feature=1, value=0.0), samples=2)
    result = steer(tiny_model, config, dicts)
    m = result.measures
    assert m["kl_mean"] > 0 and m["perplexity_steered"] > 1 and m["perplexity_default"] > 1
    assert [t["label"] for t in m["targets"]] == ["topk:3", "mp:1"]
    assert all(set(t) == {"label", "steered", "default"} for t in m["targets"])
    assert "orthogonal: strength -3" in result.notes[0] and "at most 0 (raw units)" in result.notes[1]
    again, numbers = parse_stored(stored_config(result))
    assert again == config and [i.mode for i in again.interventions] == ["orthogonal", "cap"]
    assert steer(tiny_model, again, dicts, numbers).steered_texts == result.steered_texts


def test_mode_validation():
    assert MODES == ("add", "clamp", "ablate", "orthogonal", "cap")
    with pytest.raises(ValueError, match="cap needs a value"):
        Intervention("cap", dictionary="topk", feature=1)
    with pytest.raises(ValueError, match="mode must be one of add, clamp, ablate, orthogonal, cap"):
        Intervention("project", dictionary="topk", feature=1)


def test_a_cap_sweep_is_refused(tiny_model, dicts):
    with pytest.raises(InputError, match="which cap does not use"):
        sweep(tiny_model, _config(Intervention("cap", dictionary="topk", feature=1, value=1.0)), dicts, [1.0, 2.0])


# ------------------------------------------------------------------------------------------- top-p

def _draws(logits: torch.Tensor, temperature: float, top_p: float, seed: int = 5) -> tuple[torch.Tensor, object]:
    generator = torch.Generator().manual_seed(seed)
    tokens = sample(logits, Sampling(temperature, top_p, seed), generator)
    return tokens, generator.get_state()


def _inverse_cdf(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Plain sampling, one row at a time: tokens by descending probability, the first whose running sum
    passes u (the whole distribution, no nucleus)."""
    picks = []
    for row, u in zip(torch.softmax(logits.double(), dim=-1), uniforms.tolist()):
        probs, order = row.sort(descending=True, stable=True)
        running, chosen = 0.0, int(order[-1])
        for p, token in zip(probs.tolist(), order.tolist()):
            running += p
            if running > u:
                chosen = token
                break
        picks.append(chosen)
    return torch.tensor(picks)


def test_every_mode_draws_the_same_uniforms():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    states = [_draws(logits, t, p)[1] for t, p in ((0.0, 1.0), (1.0, 1.0), (0.7, 0.3), (1.3, 0.05))]
    assert all(torch.equal(states[0], s) for s in states[1:])


def test_top_p_one_is_plain_sampling_and_tiny_top_p_is_greedy():
    logits = torch.randn(400, 30, generator=torch.Generator().manual_seed(1)) * 2
    uniforms = torch.rand(400, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)[:, 0]
    plain, _ = _draws(logits, 1.0, 1.0)
    assert torch.equal(plain, _inverse_cdf(logits, uniforms))
    assert len(set(plain.tolist())) > 5
    greedy, _ = _draws(logits, 1.0, 1e-9)
    assert torch.equal(greedy, logits.argmax(dim=-1))


def test_top_p_keeps_to_the_nucleus_and_couples_arms_with_the_same_nucleus():
    head = torch.tensor([3.0, 2.5, 2.0])  # about 0.51 / 0.31 / 0.19 of the mass with a negligible tail
    tail = torch.full((40,), -12.0)
    default = torch.cat([head, tail]).expand(500, -1)
    steered = torch.cat([head, tail - 5.0]).expand(500, -1)  # a different distribution, the same nucleus
    a, _ = _draws(default, 1.0, 0.9)
    b, _ = _draws(steered, 1.0, 0.9)
    assert torch.equal(a, b) and set(a.tolist()) == {0, 1, 2}
    assert set(_draws(default, 1.0, 0.6)[0].tolist()) == {0, 1}  # 0.51 < 0.6: the second token joins
    other_seed, _ = _draws(steered, 1.0, 0.9, seed=6)
    assert not torch.equal(other_seed, a)


def test_top_p_runs_end_to_end_with_coupled_arms(tiny_model, dicts):
    config = _config(Intervention("add", dictionary="topk", feature=3, strength=0.0), samples=4, temperature=1.5,
                     top_p=0.5, seed=11)
    result = SteerRun(tiny_model, config, dicts, measured=False).run()
    assert result.steered_ids == result.default_ids
    wide = SteerRun(tiny_model, _config(*config.interventions, samples=4, temperature=1.5, top_p=1.0, seed=11),
                    dicts, measured=False).run()
    assert wide.default_ids != result.default_ids  # the nucleus changed what was drawn
