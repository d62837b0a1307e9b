"""Steering engine on tiny-random: exactness of the edits, positions, triggers, codebook forcing, determinism."""
from __future__ import annotations

import pytest
import torch

from analysis.steering.lab import Intervention, SteerConfig, SteerDictionary, SteerRun, Trigger, steer, sweep
from store.errors import InputError
from tests.factories import steer_dictionary

HOOK = "blocks.0.hook_resid_post"
NEXT = "blocks.1.hook_resid_pre"  # the same residual after block 0: sees what our hook returned
PROMPT = "The cat sat on"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's matmuls are too small to share: a second OpenMP thread only adds sync (10x slower
    on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(*interventions, **kw) -> SteerConfig:
    kw = {"prompt": PROMPT, "chat": False, "model": "tiny-random", "max_new_tokens": 5, **kw}
    return SteerConfig(interventions=tuple(interventions), **kw)


def _prompt_acts(model, hook: str = HOOK) -> torch.Tensor:
    _, cache = model.run_with_cache(model.to_tokens(PROMPT), names_filter=hook)
    return cache[hook][0].reshape(cache[hook].shape[1], -1)


def _firing_feature(dictionary: SteerDictionary, x: torch.Tensor) -> int:
    return int(dictionary.encode(x).amax(dim=0).argmax())


def test_add_with_strength_zero_is_exactly_no_hook(tiny_model, dicts):
    result = steer(tiny_model, _config(Intervention("add", dictionary="topk", feature=3, strength=0.0),
                                       samples=2, temperature=1.0), dicts)
    assert result.steered_ids == result.default_ids
    assert result.measures["kl_mean"] == 0.0
    run = SteerRun(tiny_model, _config(Intervention("add", dictionary="relu", feature=5, strength=0.0)), dicts)
    tokens = tiny_model.to_tokens(PROMPT + " and more")
    plain = tiny_model(tokens)
    run.state.active = True
    with tiny_model.hooks(fwd_hooks=run.hooks):
        hooked = tiny_model(tokens)
    assert torch.equal(plain, hooked)


@pytest.mark.parametrize("arch", ["topk", "relu", "mp", "codebook"])
def test_clamp_to_own_value_leaves_logits_unchanged(tiny_model, dicts, arch):
    dictionary = dicts[arch]
    feature = _firing_feature(dictionary, _prompt_acts(tiny_model))
    target = dictionary.target(feature)

    def own_value(act, hook):  # the feature set to the value it already has, at every position
        x = act.reshape(-1, act.shape[-1])
        return target.clamp(x, target.read(x)).reshape(act.shape)

    tokens = tiny_model.to_tokens(PROMPT)
    assert torch.equal(tiny_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, own_value)]), tiny_model(tokens))


@pytest.mark.parametrize("arch", ["topk", "relu", "mp"])
def test_ablate_zeroes_the_feature_in_the_splice(tiny_model, dicts, arch):
    dictionary = dicts[arch]
    x = _prompt_acts(tiny_model)
    feature = _firing_feature(dictionary, x)
    acts = dictionary.encode(x)
    assert acts[:, feature].max() > 0
    edited = dictionary.target(feature).ablate(x)
    zeroed = acts.clone()
    zeroed[:, feature] = 0.0
    sae = dictionary.sae
    spliced = sae.decode(zeroed) + (x - sae.decode(acts))  # the feature at zero, error term kept
    torch.testing.assert_close(edited, spliced, atol=1e-5, rtol=1e-5)
    untouched = acts[:, feature] == 0
    assert torch.equal(edited[untouched], x[untouched])


def test_codebook_force_and_remove(tiny_model, dicts):
    target_book = dicts["codebook"]
    x = _prompt_acts(tiny_model)
    chosen_anywhere = set(target_book.target(0).ranked(x)[:, :4].flatten().tolist())
    code = next(c for c in range(target_book.d_sae) if c not in chosen_anywhere)
    target = target_book.target(code)
    chosen, forced, sigma = target.edited_codes(x, force=True)
    assert (forced == code).any(dim=1).all() and not (chosen == code).any()
    assert (forced[:, :3] == chosen[:, :3]).all()  # the lowest-scoring code made room
    expected = x + sigma * (target.codes[forced].mean(1) - target.codes[chosen].mean(1))
    torch.testing.assert_close(target.clamp(x, 1.0), expected)
    assert (target.read(target.clamp(x, 1.0)) >= 0).all()
    on = target_book.target(int(chosen[0, 0]))  # a code chosen at position 0: remove it there
    _, removed, _ = on.edited_codes(x, force=False)
    assert not (removed == on.feature).any()
    assert torch.equal(on.clamp(x[:1], 1.0), x[:1])  # forcing a code already chosen changes nothing


def test_conditional_does_nothing_where_the_trigger_is_silent(tiny_model, dicts):
    never = Trigger("relu", 0, threshold=1e9)
    result = steer(tiny_model, _config(Intervention("add", dictionary="topk", feature=3, strength=50.0,
                                                    trigger=never)), dicts)
    assert result.steered_ids == result.default_ids and result.measures["kl_mean"] == 0.0
    x = _prompt_acts(tiny_model)
    trigger_feature = _firing_feature(dicts["relu"], x)
    reads = dicts["relu"].target(trigger_feature).read(x)
    threshold = float(reads.median())
    pre, post = _record_edit(tiny_model, dicts, Intervention(
        "add", dictionary="topk", feature=3, strength=50.0, trigger=Trigger("relu", trigger_feature, threshold)))
    changed = (pre[0] != post[0]).any(dim=-1)[:x.shape[0]]
    assert torch.equal(changed, reads > threshold) and changed.any() and not changed.all()


def _record_edit(model, dicts, intervention, **kw):
    """Activations before and after our hook, over prompt + generated positions (steered arm only)."""
    pre, post = [], []
    recorders = [(HOOK, lambda a, hook: pre.append(a.clone())), (NEXT, lambda a, hook: post.append(a.clone()))]
    run = SteerRun(model, _config(intervention, **kw), dicts, arms=("steered",), measured=False)
    with model.hooks(fwd_hooks=recorders):  # registered first: the pre recorder runs before our hook
        run.run()
    return torch.cat(pre, dim=1), torch.cat(post, dim=1)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_positions_are_respected(tiny_model, dicts, positions):
    pre, post = _record_edit(tiny_model, dicts, Intervention("add", direction=tuple([1.0] * 64), hook=HOOK,
                                                             strength=3.0, positions=positions))
    n_prompt = tiny_model.to_tokens(PROMPT).shape[1]
    changed = (pre[0] != post[0]).any(dim=-1)
    is_prompt = torch.arange(changed.shape[0]) < n_prompt
    expected = {"all": torch.ones_like(is_prompt), "prompt": is_prompt, "generated": ~is_prompt}[positions]
    assert changed.shape[0] > n_prompt and torch.equal(changed, expected)


def test_hook_z_direction_is_head_major(tiny_model):
    hook = "blocks.0.attn.hook_z"
    direction = [0.0] * 64
    direction[2 * 16 + 5] = 1.0  # head 2, dimension 5 of d_head 16
    seen = []
    run = SteerRun(tiny_model, _config(Intervention("add", direction=tuple(direction), hook=hook, strength=2.0)),
                   {}, arms=("steered",), measured=False)
    with tiny_model.hooks(fwd_hooks=[(hook, lambda a, hook: seen.append(a.clone()))]):
        run.state.active = True
        with tiny_model.hooks(fwd_hooks=run.hooks), tiny_model.hooks(
                fwd_hooks=[(hook, lambda a, hook: seen.append(a.clone()))]):
            tiny_model(tiny_model.to_tokens(PROMPT))
    diff = seen[1] - seen[0]  # [b, p, heads, d_head]
    assert torch.allclose(diff[..., 2, 5], torch.full_like(diff[..., 2, 5], 2.0))
    diff[..., 2, 5] = 0
    assert not diff.any()


def test_same_seed_same_text_and_coupled_arms(tiny_model, dicts):
    config = _config(Intervention("add", dictionary="mp", feature=1, strength=2.0), samples=3, temperature=1.0,
                     seed=7)
    first = SteerRun(tiny_model, config, dicts, measured=False).run()
    again = SteerRun(tiny_model, config, dicts, measured=False).run()
    assert first.steered_texts == again.steered_texts and first.default_texts == again.default_texts
    other = SteerRun(tiny_model, _config(*config.interventions, samples=3, temperature=1.0, seed=8), dicts,
                     measured=False).run()
    assert other.default_ids != first.default_ids
    assert len({tuple(ids) for ids in first.default_ids}) > 1  # samples differ from each other


def test_measures_and_sweep(tiny_model, dicts):
    config = _config(Intervention("clamp", dictionary="relu", feature=2, strength=1.0, value=5.0), samples=2)
    result = steer(tiny_model, config, dicts)
    m = result.measures
    assert len(m["kl_per_position"]) == max(len(ids) for ids in result.steered_ids)
    assert m["kl_mean"] > 0 and m["perplexity_steered"] > 1 and m["perplexity_default"] > 1
    assert m["targets"][0]["label"] == "relu:2" and set(m["targets"][0]) == {"label", "steered", "default"}
    points = sweep(tiny_model, _config(Intervention("add", dictionary="topk", feature=3)), dicts, [0.0, 20.0])
    assert [p.strength for p in points] == [0.0, 20.0]
    assert points[0].kl_mean == 0.0 and points[1].kl_mean > 0
    assert points[0].result.steered_texts == points[0].result.default_texts


@pytest.mark.parametrize("kwargs, needle", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"strength": float("inf")}, "strength must be a finite number"),
    ({"strength": float("nan")}, "strength must be a finite number"),
    ({"mode": "boost"}, "mode must be one of"),
    ({"samples": 0}, "samples must be"),
])
def test_config_rejects_bad_values(kwargs, needle):
    iv = {k: kwargs.pop(k) for k in ("strength", "mode") if k in kwargs}
    with pytest.raises(ValueError, match=needle):
        _config(Intervention(iv.get("mode", "add"), dictionary="topk", feature=1,
                             strength=iv.get("strength", 1.0)), **kwargs)


@pytest.mark.parametrize("intervention, needle", [
    (Intervention("add", dictionary="nope", feature=1), "unknown dictionary 'nope'"),
    (Intervention("add", dictionary="topk", feature=128), "feature 128 is not in dictionary 'topk'"),
    (Intervention("add", direction=(1.0, 2.0), hook=HOOK), "has width 2"),
    (Intervention("add", direction=(1.0,) * 64, hook="blocks.7.hook_resid_post"), "layers 0..1"),
])
def test_bad_targets_fail_with_one_clear_line(tiny_model, dicts, intervention, needle):
    with pytest.raises(InputError, match=needle):
        SteerRun(tiny_model, _config(intervention), dicts)


def test_prompt_longer_than_context_says_the_limit(tiny_model, dicts):
    with pytest.raises(InputError, match="context of 256 tokens"):
        SteerRun(tiny_model, _config(Intervention("add", dictionary="topk", feature=1), prompt="x" * 300), dicts)
    with pytest.raises(InputError, match="at most"):
        SteerRun(tiny_model, _config(Intervention("add", dictionary="topk", feature=1), max_new_tokens=250), dicts)
    with pytest.raises(InputError, match="no chat template"):
        SteerRun(tiny_model, _config(Intervention("add", dictionary="topk", feature=1), chat=True), dicts)


def test_a_trigger_read_after_the_edit_is_refused(tiny_model, dicts, tmp_path):
    later = {**dicts, "late": steer_dictionary(tmp_path, "relu", hook="blocks.1.hook_resid_post")}
    later["late"].name = "late"
    spec = Intervention("add", dictionary="topk", feature=1, trigger=Trigger("late", 0))
    with pytest.raises(InputError, match="after blocks.0.hook_resid_post"):
        SteerRun(tiny_model, _config(spec), later)


def test_hook_z_dictionary_splices_on_flattened_heads(tiny_model, tmp_path):
    hook = "blocks.1.attn.hook_z"
    zdict = {"z": steer_dictionary(tmp_path, "topk", hook=hook)}
    zdict["z"].name = "z"
    assert zdict["z"].sae.cfg.reshape_activations == "hook_z"
    _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(PROMPT), names_filter=hook)
    z = cache[hook][0]  # [pos, heads, d_head]
    x = z.reshape(z.shape[0], -1)  # head-major rows
    feature = int(zdict["z"].encode(x)[-1].argmax())  # fires at the last prompt position, which predicts
    target = zdict["z"].target(feature)                  # the first new token (layer 1 is the last layer)
    assert torch.equal(target.clamp(x, target.read(x)), x)
    same = steer(tiny_model, _config(Intervention("add", dictionary="z", feature=feature, strength=0.0)), zdict)
    assert same.steered_ids == same.default_ids and same.measures["kl_mean"] == 0.0
    ablated = steer(tiny_model, _config(Intervention("ablate", dictionary="z", feature=feature)), zdict)
    assert ablated.measures["kl_mean"] > 0
