"""One model, many sessions: every forward pass the UI makes holds the model's lock, and no hook outlives its run.

The UI shares one HookedTransformer per model name between sessions, and TransformerLens keeps hooks on the
model: while a steering run streams, its hooks are attached, so a forward pass of another session (the prompt
inspector, the heads page) must wait for it, and a run that fails must leave nothing attached.
"""
import threading
import time

import numpy as np
import pytest

from analysis.steering import hooks as steering_hooks
from analysis.steering.lab import Intervention, SteerConfig
from app.ui.data import cache
from app.ui.data import heads as heads_data
from app.ui.data import steering as steering_data
from tests.ui_store import HOOK, MODEL

TEXT = "The quick brown fox jumps over the lazy dog."
pytestmark = pytest.mark.usefixtures("one_thread")


def _config() -> SteerConfig:
    push = (25.0,) + (0.0,) * 63  # a raw direction at the inspector's hook, big enough to change its reading
    return SteerConfig(TEXT, (Intervention("add", direction=push, hook=HOOK, strength=1.0),), model=MODEL,
                       chat=False, max_new_tokens=3, temperature=0.0)


def _inspect(ui_ws):
    """The inspector's data call, computed afresh (st.cache_data would answer from memory)."""
    from store import session
    from store.dictionaries import list_dictionaries

    with session(ui_ws / "sparsescope.duckdb", read_only=True) as con:
        spec = tuple((d.name, cache.stamp(d.path)) for d in list_dictionaries(con))
    cache.inspect.clear()
    return cache.inspect(MODEL, HOOK, spec, TEXT)


def _same(a, b) -> bool:
    return a.tokens == b.tokens and all(np.array_equal(a.readings[n].ids, b.readings[n].ids) and
                                        np.allclose(a.readings[n].acts, b.readings[n].acts) for n in a.readings)


def _hooks_attached(lm) -> int:
    return sum(len(point.fwd_hooks) + len(point.bwd_hooks) for point in lm.hook_dict.values())


def test_the_inspector_waits_for_a_steering_run_in_another_session(ui_ws, monkeypatch):
    clean = _inspect(ui_ws)
    inside, release, finished = threading.Event(), threading.Event(), []
    steering_thread = threading.Thread(target=lambda: (steering_data.steer(_config(), {}), finished.append("steer")),
                                       name="steering-session")
    apply = steering_hooks._apply

    def pause_in_the_steered_pass(bound, x, mask):
        """Hold the steering run inside its own steered forward pass, with its hooks attached and active."""
        if threading.current_thread() is steering_thread and not inside.is_set():
            inside.set()
            release.wait(timeout=2.0)  # with the lock the inspector cannot run meanwhile: this times out
        return apply(bound, x, mask)

    monkeypatch.setattr(steering_hooks, "_apply", pause_in_the_steered_pass)
    steering_thread.start()
    try:
        assert inside.wait(timeout=60)
        started = time.monotonic()
        during = _inspect(ui_ws)  # another session inspects a prompt while the run streams
        finished.append("inspect")
        waited = time.monotonic() - started
    finally:
        release.set()
        steering_thread.join(timeout=60)
    assert finished == ["steer", "inspect"], "the inspector ran its forward pass in the middle of the steering run"
    assert waited > 1.0
    assert _same(during, clean), "the inspector read activations edited by another session's steering hooks"
    assert _hooks_attached(cache.model(MODEL)) == 0


def test_every_forward_pass_of_the_ui_takes_the_model_lock(ui_ws, monkeypatch):
    """The heads page's pattern, ablation and ranking and the inspector enter cache.using_model."""
    entered = []
    using = cache.using_model

    def recording(name):
        entered.append(name)
        return using(name)

    monkeypatch.setattr(cache, "using_model", recording)
    _inspect(ui_ws)
    for fn, args in ((heads_data.pattern, (MODEL, TEXT, 0, 1)),
                     (heads_data.ablation, (MODEL, TEXT, 0, 1, "zero", None)),
                     (heads_data.ranking, (MODEL, TEXT, ""))):
        fn.clear()
        fn(*args)
    steering_data.steer(_config(), {})
    steering_data.sweep(_config(), {}, [0.0, 1.0])
    assert entered == [MODEL] * 6


@pytest.mark.parametrize("where", ["on_step", "hook"])
def test_a_failing_steering_run_leaves_no_hook_behind(ui_ws, monkeypatch, where):
    """A run that fails mid-generation (the page's script stopped by a click, a hook that raises): the next
    forward pass sees the clean model."""
    clean = _inspect(ui_ws)
    lm = cache.model(MODEL)
    on_step = None
    if where == "on_step":
        def on_step(step):  # what Streamlit does to a script run when the user clicks mid-stream
            if step.step == 1:
                raise RuntimeError("script run stopped")
    else:
        calls = []

        def failing(bound, x, mask):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("hook failed")
            return x
        monkeypatch.setattr(steering_hooks, "_apply", failing)
    with pytest.raises(RuntimeError):
        steering_data.steer(_config(), {}, on_step=on_step)
    assert _hooks_attached(lm) == 0 and lm.context_level == 0
    assert _same(_inspect(ui_ws), clean)


def test_using_model_removes_a_hook_left_behind(ui_ws):
    """Whatever a locked block leaves attached (a stream never closed, say) is gone when it lets go."""
    with cache.using_model(MODEL) as lm:
        lm.add_hook(HOOK, lambda act, hook: act * 0)
        assert _hooks_attached(lm) == 1
    assert _hooks_attached(lm) == 0
