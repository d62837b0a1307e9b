"""GBA: the bias rule on a hand-made batch, biases outside the optimizer and in [-1, 0], group targets held on
synthetic sparse data, bad options refused. The contract test (test_contract.py) covers it as a registered
architecture."""
from __future__ import annotations

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from sae.dictionaries import DictSpec, build_training_sae, init_from_sample, parse_options, train_step
from sae.dictionaries.gba import adapt_biases, group_targets
from sae.training import input_scale
from store.errors import InputError
from tests.factories import sparse_activations


def _gba(d_in: int, d_sae: int, **options):
    return build_training_sae(DictSpec("gba", d_in, d_sae, options=tuple(options.items())))


def test_the_bias_update_on_a_hand_made_batch_hits_both_clips():
    # Groups [0, 0, 1, 1] with targets 0.5 and 0.2; four rows, so "never fired" is the only p < eps.
    sae = _gba(2, 4, groups=2, target_high=0.5, target_low=0.2, gamma=0.5, update_every=1, eps=0.1)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([e1, -e1, e2, -e2], dim=1))
        sae.b_dec.zero_()
        sae.b_enc.copy_(torch.tensor([-0.5, -0.1, 0.0, -0.3]))
    rows = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.4]])
    sae.training_forward_pass(TrainStepInput(sae_in=rows, coefficients={}, dead_neuron_mask=None,
                                             n_training_steps=0, is_logging_step=False))
    sae.after_step(rows, torch.zeros(4, dtype=torch.bool), optimizer=None)
    # 0: fires 3/4 > 0.5, peak 2.5: -0.5 - 0.5 * 2.5 = -1.75, clipped to -1
    # 1: never fires: -0.1 + 0.5 * 2.5 (group 0's mean positive peak) = 1.15, clipped to 0
    # 2: fires 1/4 > 0.2, peak 0.4: 0 - 0.5 * 0.4 = -0.2
    # 3: never fires: -0.3 + 0.5 * 0.4 (group 1's mean positive peak) = -0.1
    torch.testing.assert_close(sae.b_enc, torch.tensor([-1.0, 0.0, -0.2, -0.1]))
    assert int(sae.window_tokens) == 0 and int(sae.fire_count.sum()) == 0  # the window starts again


def _window(sae, rows):
    sae.training_forward_pass(TrainStepInput(sae_in=rows, coefficients={}, dead_neuron_mask=None,
                                             n_training_steps=0, is_logging_step=False))
    sae.after_step(rows, torch.zeros(sae.cfg.d_sae, dtype=torch.bool), optimizer=None)


def test_a_rare_groups_frequency_is_counted_over_enough_past_windows():
    # Group 1's target 0.1 with min_fires 1 needs 10 tokens: windows of 4 rows are counted in threes. In the third
    # window feature 2 fires once (1/12 < 0.1 over three windows: left alone, where the last window's 1/4 > 0.1
    # lowered it) and feature 3 twice (2/12 > 0.1: lowered by gamma x its peak 0.2).
    sae = _gba(2, 4, groups=2, target_high=0.5, target_low=0.1, gamma=0.5, update_every=1, eps=0.0, min_fires=1)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([e1, e1, e1, e2], dim=1))
        sae.b_dec.zero_()
        sae.b_enc.copy_(torch.tensor([-0.9, -0.9, -0.5, -0.5]))
    quiet = torch.zeros(4, 2)
    _window(sae, quiet)
    _window(sae, quiet)
    _window(sae, torch.tensor([[0.6, 0.0], [0.0, 0.7], [0.0, 0.6], [0.0, 0.0]]))
    torch.testing.assert_close(sae.b_enc, torch.tensor([-0.9, -0.9, -0.5, -0.6]))
    # A quiet fourth window: windows 2 to 4 still hold feature 3's two firings, lowered again, by its peak as it
    # would be with the new bias (0.2 - 0.1): -0.6 - 0.5 * 0.1
    _window(sae, quiet)
    torch.testing.assert_close(sae.b_enc, torch.tensor([-0.9, -0.9, -0.5, -0.65]))


def test_one_pass_holds_the_rarest_group_when_a_window_is_too_short_for_its_target():
    # One pass, update every step, 256 rows a step: the rarest target (0.002) fires half a time in a window.
    # Counted over the last window alone (min_fires 0, the rule as written) the rarest group ended above 1.5 x
    # its target; counted over enough windows for 16 firings it is held.
    def within(min_fires: float) -> tuple[float, float]:
        torch.manual_seed(0)
        rows = torch.tensor(sparse_activations(n=20_000, d_in=16, seed=1))
        rows = rows * input_scale(rows, 16, unit_norm=True)
        sae = _gba(16, 64, groups=4, target_high=0.1, target_low=0.002, gamma=0.1, update_every=1,
                   min_fires=min_fires)
        init_from_sample(sae, rows[:4000])
        optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)
        steps = rows.shape[0] // 256
        for step in range(steps):
            train_step(sae, rows[step * 256:(step + 1) * 256], optimizer, step, steps)
        with torch.no_grad():
            freq = (sae.encode(rows) > 0).float().mean(dim=0)
        return float((freq <= 1.5 * sae.target).float().mean()), float((freq == 0).float().mean())

    held, dead = within(16.0)
    assert held >= 0.95 and dead <= 0.05
    assert within(0.0)[0] < 0.95


def test_adapt_biases_leaves_features_between_eps_and_target_alone():
    group, target = group_targets(4, 2, 0.5, 0.1)
    torch.testing.assert_close(target, torch.tensor([0.5, 0.5, 0.1, 0.1]))
    bias = torch.tensor([-0.3, -0.2, -0.1, -0.4])
    new = adapt_biases(bias, torch.tensor([0.5, 0.2, 0.05, 0.1]), torch.tensor([1.0, 1.0, 1.0, 1.0]), target,
                       group, gamma=0.1, eps=0.01)
    assert torch.equal(new, bias)


def test_group_targets_are_geometric_from_high_to_low():
    group, target = group_targets(10, 5, 0.1, 1e-3)
    assert group.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    per_group = target[::2]
    torch.testing.assert_close(per_group[1:] / per_group[:-1], torch.full((4,), 0.1 ** 0.5), rtol=1e-5, atol=0)
    assert float(per_group[0]) == pytest.approx(0.1) and float(per_group[-1]) == pytest.approx(1e-3)


def test_the_biases_are_never_in_the_optimizer():
    sae = _gba(16, 32)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(sae.b_enc) not in in_groups and "b_enc" not in dict(sae.named_parameters())
    assert "b_enc" in sae.state_dict()  # still saved (and checkpointed) with the weights
    rows = torch.randn(64, 16)
    before = sae.b_enc.clone()
    train_step(sae, rows, optimizer, 0, 10)  # one step, no update yet (update_every 50): gradients leave it
    assert torch.equal(sae.b_enc, before) and sae.b_enc.grad is None


def test_b_pre_is_fixed_at_the_geometric_median_and_never_trained():
    # Trained, b_pre's gradient through the encoder moves every threshold w_m . b_pre - b_m the way the
    # reconstruction loss wants (more firing, there is no sparsity term): L0 ran away on the demo cache.
    rows = torch.tensor(sparse_activations(n=2048, d_in=16))
    rows = rows * input_scale(rows, 16, unit_norm=True)
    sae = _gba(16, 32)
    init_from_sample(sae, rows[:1024])
    median = sae.b_dec.clone()
    assert "b_dec" not in dict(sae.named_parameters()) and "b_dec" in sae.state_dict()
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(8):
        train_step(sae, rows[step * 256:(step + 1) * 256], optimizer, step, 8)
    assert torch.equal(sae.b_dec, median)


def test_the_decoder_is_tied_to_the_encoder_and_saved_as_a_standard_sae(tmp_path):
    from sae_lens import SAE

    from sae.dictionaries import save_dictionary

    rows = torch.tensor(sparse_activations(n=1024, d_in=16))
    sae = _gba(16, 32)
    init_from_sample(sae, rows)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(4):
        train_step(sae, rows[step * 256:(step + 1) * 256], optimizer, step, 4)
    assert "W_dec" not in dict(sae.named_parameters())  # a_m and the unit encoder column w_m are trained
    cosine = torch.nn.functional.cosine_similarity(sae.W_dec, sae.W_enc.T, dim=-1)
    torch.testing.assert_close(cosine, torch.ones(32))  # decoder row m is a_m * w_m
    save_dictionary(sae, tmp_path / "gba", activation_scale=3.0)  # the scale folded in, as training saves it
    loaded = SAE.load_from_disk(tmp_path / "gba")
    with torch.no_grad():
        torch.testing.assert_close(loaded(rows / 3.0), sae(rows) / 3.0, rtol=1e-4, atol=1e-5)


def test_the_decoder_scale_starts_at_its_least_squares_value():
    # From SAELens' 0.1, Adam (about lr a step) left one pass over the demo cache at FVU 0.50 against TopK's 0.28.
    rows = torch.tensor(sparse_activations(n=2048, d_in=16))
    rows = rows * input_scale(rows, 16, unit_norm=True)
    sae = _gba(16, 32)
    init_from_sample(sae, rows)

    def error(scale: float) -> float:
        with torch.no_grad():
            sae.a.fill_(scale)
            return float((sae(rows) - rows).pow(2).sum())

    fitted = float(sae.a[0].detach())
    assert torch.equal(sae.a, torch.full((32,), fitted)) and fitted > 0.2
    assert error(fitted) < min(error(0.9 * fitted), error(1.1 * fitted), error(0.1))


def _train_on_sparse_data(seed: int = 0):
    torch.manual_seed(seed)
    rows = torch.tensor(sparse_activations(n=20_000, d_in=16, seed=seed))
    rows = rows * input_scale(rows, 16, unit_norm=True)  # what the training loop feeds GBA: mean norm 1
    sae = _gba(16, 64, groups=4, target_high=0.1, target_low=0.01, update_every=5)
    init_from_sample(sae, rows[:4000])
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)
    steps = 4 * (rows.shape[0] // 256)
    for step in range(steps):
        start = (step * 256) % rows.shape[0]
        train_step(sae, rows[start:start + 256], optimizer, step, steps)
        assert -1.0 <= float(sae.b_enc.min()) and float(sae.b_enc.max()) <= 0.0
    return sae, rows


def test_training_holds_each_group_near_its_target_with_few_dead():
    sae, rows = _train_on_sparse_data()
    with torch.no_grad():
        freq = (sae.encode(rows) > 0).float().mean(dim=0)
    assert float((freq <= 1.5 * sae.target).float().mean()) >= 0.95
    assert float((freq == 0).float().mean()) <= 0.05
    assert float(sae.b_enc.min()) >= -1.0 and float(sae.b_enc.max()) <= 0.0
    torch.testing.assert_close(sae.W_enc.norm(dim=0), torch.ones(64))  # unit encoder columns


def test_input_scale_brings_gba_inputs_to_mean_norm_one():
    rows = torch.randn(100, 16) * 7
    assert float((rows * input_scale(rows, 16, unit_norm=True)).norm(dim=-1).mean()) == pytest.approx(1.0)
    assert float((rows * input_scale(rows, 16)).norm(dim=-1).mean()) == pytest.approx(4.0)


@pytest.mark.parametrize("options, message", [
    ((("target_high", 1.5),), "target_high is a frequency"),
    ((("target_low", 0.0),), "target_low is a frequency"),
    ((("target_low", -0.1),), "target_low is a frequency"),
    ((("groups", 0),), "groups must be at least 1"),
    ((("groups", 40),), "cannot exceed the number of features (32)"),
    ((("target_low", 0.5), ("target_high", 0.1)), "must not exceed target_high"),
    ((("gamma", 0.0),), "gamma must be positive"),
    ((("update_every", 0),), "update_every must be at least 1"),
    ((("min_fires", -1.0),), "min_fires must be at least 0"),
])
def test_options_that_cannot_hold_are_refused_in_one_line(options, message):
    with pytest.raises(InputError, match=".*") as info:
        DictSpec("gba", 16, 32, options=options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_option_texts_are_parsed_and_checked_by_name_and_type():
    assert parse_options("gba", ["groups=4", "target_low=1e-4", "quantile_init=false"]) == (
        ("groups", 4), ("target_low", 1e-4), ("quantile_init", False))
    for texts, message in ((["groups"], "NAME=VALUE"), (["group=4"], "unknown option 'group' for gba"),
                           (["groups=four"], "groups must be int"), (["gamma=x"], "gamma must be float")):
        with pytest.raises(InputError, match=message):
            parse_options("gba", texts)
    with pytest.raises(InputError, match="--option does not apply to relu"):
        parse_options("relu", ["groups=4"])


def test_the_spec_records_every_option_and_the_config_gets_them():
    spec = DictSpec.with_defaults("gba", 16, 32, options=(("groups", 4),))
    assert dict(spec.options)["groups"] == 4 and dict(spec.options)["gamma"] == 0.01
    sae = build_training_sae(spec)
    assert sae.cfg.groups == 4 and int(sae.group.max()) == 3
