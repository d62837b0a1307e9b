"""MP-SAE as the paper trains it (options): b_dec from zero, adaptive stopping in training; the options' checks."""
from __future__ import annotations

import math

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from sae.dictionaries import (
    MPSAE,
    DictSpec,
    MPSAEConfig,
    MPTrainingSAE,
    MPTrainingSAEConfig,
    build_training_sae,
    geometric_median,
    init_from_sample,
    mp_encode_steps,
    parse_options,
    save_dictionary,
    train_step,
    with_residual_threshold,
)
from sae.dictionaries.storage import load_dictionary
from store.errors import InputError

pytestmark = pytest.mark.usefixtures("seed", "one_thread")

D = 8


def hierarchy(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit directions [8, 8], inputs [n, 8]): one parent (with one of its two children half the time) or one
    singleton per input, magnitudes around 1.5: a small version of the paper's toy (bench/hierarchy.py)."""
    feats = torch.linalg.qr(torch.randn(D, D))[0]
    top = torch.randint(4, (n,))  # parents 0 and 3, singletons 6 and 7
    first = torch.tensor([0, 3, 6, 7])[top]
    active = torch.zeros(n, D)
    active[torch.arange(n), first] = 1
    child = torch.randint(4, (n,))
    with_child = (top < 2) & (child < 2)
    active[with_child.nonzero()[:, 0], first[with_child] + 1 + child[with_child]] = 1
    return feats, (active * (1.5 + 0.25 * torch.randn(n, D))) @ feats


def mp_dictionary(**fields) -> MPTrainingSAE:
    return MPTrainingSAE(MPTrainingSAEConfig(d_in=D, d_sae=D, decoder_init_norm=1.0, **fields))


@pytest.mark.parametrize("fields, at_median", [({}, True), ({"median_init": False}, False),
                                               ({"decoder_bias": False}, False)])
def test_b_dec_starts_at_the_median_or_at_zero_as_in_the_paper(fields, at_median):
    sample = torch.rand(64, D) + 3
    sae = mp_dictionary(k=2, **fields)
    init_from_sample(sae, sample)
    expected = geometric_median(sample) if at_median else torch.zeros(D)
    assert torch.allclose(sae.b_dec, expected)


@pytest.mark.parametrize("decoder_bias", [True, False])
def test_without_a_decoder_bias_b_dec_stays_zero(decoder_bias):
    _, x = hierarchy(2_000)
    sae = mp_dictionary(k=2, decoder_bias=decoder_bias)
    init_from_sample(sae, x)
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-2)
    for step in range(10):
        train_step(sae, x[step * 200:(step + 1) * 200], optimizer, step, 10)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(D))
    assert bool((sae.b_dec == 0).all()) == (not decoder_bias)


def test_adaptive_training_stops_each_input_early():
    """adaptive=true trains with the stopping rules (the paper's loop); fixed k takes all k steps."""
    W = torch.nn.functional.normalize(torch.randn(D, D), dim=-1)
    x = 2 * W[torch.randint(D, (256,))] + 0.01 * torch.randn(256, D)  # one atom each, plus noise
    l0 = {}
    for adaptive in (False, True):
        sae = mp_dictionary(k=4, adaptive=adaptive, residual_threshold=0.2)
        sae.load_state_dict({"W_dec": W, "b_dec": torch.zeros(D)})
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                                                       n_training_steps=0, is_logging_step=False))
        l0[adaptive] = float(out.metrics["l0"])
    assert l0[True] == 1.0 and l0[False] > 2.0


def test_an_adaptive_dictionary_saves_its_step_budget(tmp_path):
    sae = mp_dictionary(k=3, adaptive=True, residual_threshold=0.5)
    save_dictionary(sae, tmp_path / "d", activation_scale=2.0)
    loaded = load_dictionary(tmp_path / "d")
    assert (loaded.cfg.adaptive, loaded.cfg.max_iterations) == (True, 3)
    assert math.isclose(loaded.cfg.residual_threshold, 0.25)  # raw units: the training threshold / scale
    steps = mp_encode_steps(loaded, torch.randn(16, D) * 10)
    assert int(steps.n_steps.max()) <= 3


def test_the_mp_options_reach_the_training_config():
    spec = DictSpec.with_defaults("mp", D, D, 2, options=parse_options("mp", ["adaptive=true",
                                                                         "residual_threshold=0.05"]))
    sae = build_training_sae(spec, device="cpu")
    assert (sae.cfg.adaptive, sae.cfg.residual_threshold, sae.cfg.k) == (True, 0.05, 2)


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_a_bad_residual_threshold_is_one_line(value):
    with pytest.raises(InputError, match="residual_threshold must be a finite number >= 0") as info:
        DictSpec.with_defaults("mp", D, D, 2, options=parse_options("mp", [f"residual_threshold={value}"]))
    assert "\n" not in str(info.value)


def test_with_residual_threshold_switches_inference_to_adaptive():
    sae = MPSAE(MPSAEConfig(d_in=D, d_sae=D, k=4))
    W = torch.nn.functional.normalize(torch.randn(D, D), dim=-1)
    sae.load_state_dict({"W_dec": W, "b_dec": torch.zeros(D)})
    x = 2 * W[:5] + 0.01 * torch.randn(5, D)
    assert int(mp_encode_steps(sae, x).n_steps.min()) == 4
    with_residual_threshold(sae, 0.2)
    assert (sae.cfg.adaptive, sae.cfg.max_iterations) == (True, 4)
    assert mp_encode_steps(sae, x).n_steps.tolist() == [1] * 5


def test_with_residual_threshold_refuses_bad_input():
    sae = MPSAE(MPSAEConfig(d_in=D, d_sae=D, k=4))
    with pytest.raises(InputError, match="finite number >= 0"):
        with_residual_threshold(sae, -1.0)
    topk = build_training_sae(DictSpec.with_defaults("topk", D, D, 2), device="cpu")
    with pytest.raises(InputError, match="applies to mp .* not topk ones"):
        with_residual_threshold(topk, 0.1, "topk")
