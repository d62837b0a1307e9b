"""One device for everything a command or a UI data function touches: the model, its dictionaries and every
tensor a hook sees.

Without a second real device, the default device becomes `meta` (sae.device.pick_device returns it when no
device is asked for): whatever follows the one device abstraction lands there, and whatever is loaded or made
elsewhere (a hard-coded CPU) shows up in sae.device_watch.DeviceWatch, which records every module input and
parameter off `meta` and every operation mixing devices. Meta tensors hold no data, so a run stops at its first
data-dependent step (`Cannot copy out of meta tensor`); every check below happens before that, on the model's
first forward passes and on every model and dictionary loaded. `test_the_watch_catches_a_dictionary_on_another_
device` shows the check failing when one part is loaded elsewhere.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

from sae.device_watch import DeviceWatch
from tests.factories import saved_dictionary
from tests.helpers import run_cli
from tests.ui_store import CORPUS, HOOK, MODEL, demo_workspace

META = torch.device("meta")
ATTN = "blocks.1.attn.hook_z"
META_ERRORS = ("meta",)
"""How a run on meta ends once it needs data (`Cannot copy out of meta tensor`, `... unimplemented for meta`)."""


def _meta_default(monkeypatch, watch: DeviceWatch) -> None:
    """pick_device(None) -> meta in every module that bound it; every loaded model and dictionary checked."""
    import sae.device
    import sae.dictionaries
    import sae.models

    original = sae.device.pick_device

    def pick(requested=None):
        # the default, and the default handed back by name (a command resolves the device once, then passes it on)
        return META if requested is None or str(requested) in ("auto", "meta") else original(requested)

    for module in list(sys.modules.values()):
        if getattr(module, "pick_device", None) is original:
            monkeypatch.setattr(module, "pick_device", pick)
    load_model, load_dictionary = sae.models.load_model, sae.dictionaries.load_dictionary

    def checked_model(*args, **kwargs):
        model = load_model(*args, **kwargs)
        watch.check(model, f"model {model.cfg.model_name}")
        return model

    def checked_dictionary(path, device="cpu"):
        device = torch.device(device)  # safetensors cannot read onto meta: read on the CPU, then move
        sae = load_dictionary(path, device="cpu" if device == META else device).to(device)
        watch.check(sae, f"dictionary {path}")
        return sae

    monkeypatch.setattr(sae.models, "load_model", checked_model)
    monkeypatch.setattr(sae.dictionaries, "load_dictionary", checked_dictionary)


@pytest.fixture(scope="module")
def source_ws(tmp_path_factory):
    """The UI tests' demo workspace plus an attention-output (hook_z) dictionary `attn-demo`."""
    from store import session
    from store.dictionaries import DictionaryRow, add_dictionary

    root = demo_workspace(tmp_path_factory.mktemp("one-device") / "ws")
    folder = saved_dictionary(root / "dictionaries" / "attn-demo", arch="topk", d_in=64, d_sae=96, k=4,
                              hook_name=ATTN, model_name=MODEL)
    with session(root / "sparsescope.duckdb") as con:
        add_dictionary(con, DictionaryRow("attn-demo", MODEL, ATTN, "topk", 64, 96, 4, str(folder)))
    return root


@pytest.fixture
def meta_ws(source_ws, tmp_path, monkeypatch):
    """A copy of the workspace ($SPARSESCOPE_WORKSPACE) and a DeviceWatch on meta, the default device; the UI's
    caches are emptied before and after, so no model or dictionary crosses between tests."""
    import shutil

    import streamlit as st

    root = tmp_path / "ws"
    shutil.copytree(source_ws, root)
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(root))
    watch = DeviceWatch(META)
    _meta_default(monkeypatch, watch)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield root, watch
    st.cache_resource.clear()
    st.cache_data.clear()


def _stopped_on_meta(exc: BaseException | str | None) -> bool:
    return exc is None or any(m in str(exc) for m in META_ERRORS)


def _assert_one_device(watch: DeviceWatch, ended, forward: bool = True) -> None:
    assert not watch.problems, watch.problems
    assert watch.forwards["HookPoint"] > 0 or not forward, "the run never reached the model"
    assert _stopped_on_meta(ended), ended


CLI = {
    "analyze": ["analyze", "topk-demo", "--corpus", CORPUS, "--tokens", "256"],
    "analyze-mp": ["analyze", "mp-demo", "--corpus", CORPUS, "--tokens", "256"],
    "codes": ["codes", "codebook-demo", "a", "--corpus", CORPUS, "--tokens", "256"],
    "steer": ["steer", "--feature", "topk-demo:3", "--prompt", "the cat", "--raw", "--max-new-tokens", "2",
              "--samples", "1"],
    "heads": ["heads", "--model", MODEL, "--corpus", CORPUS, "--tokens", "256"],
    "head-pattern": ["head-pattern", "--layer", "1", "--head", "2", "--prompt", "the cat sat", "--model", MODEL],
    "head-ablate": ["head-ablate", "--layer", "1", "--head", "2", "--prompt", "the cat sat", "--model", MODEL],
    "head-rank": ["head-rank", "--prompt", "the cat sat", "--model", MODEL],
    "activations": ["activations", "--model", MODEL, "--hook", HOOK, "--corpus", CORPUS, "--tokens", "256"],
    "train": ["train", "--arch", "topk", "--model", MODEL, "--hook", HOOK, "--corpus", CORPUS, "--tokens", "512",
              "--batch", "128", "--d-sae", "64", "--k", "4", "--name", "t-meta"],
    "import": ["import", "{folder}", "--corpus", CORPUS, "--eval-tokens", "256"],
}
BEFORE_FORWARD = {"heads"}
"""Commands whose first data-dependent step (matching token ids) comes before the model's first forward: on meta
only the loaded model is checked."""


@pytest.mark.parametrize("command", sorted(CLI))
def test_every_command_that_runs_a_model_keeps_one_device(meta_ws, monkeypatch, capsys, tmp_path, command):
    root, watch = meta_ws
    folder = saved_dictionary(tmp_path / "theirs", arch="topk", d_in=64, d_sae=96, k=4, hook_name=HOOK,
                              model_name=MODEL)
    args = [a.format(folder=folder) for a in CLI[command]]
    with watch:
        code, _, err = run_cli(monkeypatch, capsys, *args, "-w", str(root))
    assert code in (0, None, 1), err  # 1: stopped where data was needed (checked below)
    _assert_one_device(watch, err if code == 1 else None, forward=command not in BEFORE_FORWARD)


def _inspect():
    from app.ui.data import cache

    return cache.inspect(MODEL, HOOK, (("topk-demo", 0), ("mp-demo", 0)), "the cat sat on the mat")


def _steering_page():
    from analysis.steering.lab import Intervention, SteerConfig
    from app.ui.data import steering as sc

    rows = _rows()
    config = SteerConfig("the cat", (Intervention("add", dictionary="topk-demo", feature=3, strength=2.0),),
                         model=MODEL, chat=False, max_new_tokens=2, samples=1)
    sc.steer(config, sc.dictionaries(rows, ["topk-demo"]))  # what the page calls: the shared model, held


def _rows():
    from store import session
    from store.dictionaries import list_dictionaries
    from store.workspace import Workspace

    with session(Workspace.resolve(None).db_path, read_only=True) as con:
        return {d.name: d for d in list_dictionaries(con)}


def _heads_page():
    from app.ui.data import heads

    heads.pattern(MODEL, "the cat sat", 1, 2)
    heads.ablation(MODEL, "the cat sat", 1, 2, "zero", None)
    heads.ranking(MODEL, "the cat sat", " on")


def _head_weights():
    from app.ui.data import heads

    row = _rows()["attn-demo"]
    heads.feature_head_weights(MODEL, "attn-demo", row.path, 3)


UI = {"inspector": _inspect, "steering": _steering_page, "heads": _heads_page, "head-weights": _head_weights}


def _evaluation():
    """What training runs after it saves a dictionary: activation metrics and CE loss on the model."""
    from analysis.evaluate import evaluate_dictionary

    class Rows:
        def held_out_rows(self):
            return torch.randn(64, 64)

    folder = Path(_rows()["topk-demo"].path)
    evaluate_dictionary(folder, Rows(), torch.zeros(2, 8, dtype=torch.long), MODEL, HOOK)


def _dfa():
    """Direct feature attribution of an attention-output dictionary (model and dictionary by default)."""
    from analysis.dictionaries import open_dictionary
    from analysis.heads.dfa import feature_dfa
    from sae.models import load_model
    from store.workspace import Workspace

    _, sae = open_dictionary(Workspace.resolve(None), "attn-demo")
    feature_dfa(load_model(MODEL), sae, "the cat sat on the mat", features=[1, 2])


LIBRARY = {"evaluation": _evaluation, "dfa": _dfa}


@pytest.mark.parametrize("page", sorted(UI))
def test_every_ui_data_function_that_runs_a_model_keeps_one_device(meta_ws, page):
    _run_and_check(meta_ws[1], UI[page], forward=page != "head-weights")  # head weights: the dictionary alone


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_evaluation_and_dfa_keep_one_device(meta_ws, name):
    _run_and_check(meta_ws[1], LIBRARY[name], forward=name != "evaluation")  # it stops at the first metric


def _run_and_check(watch: DeviceWatch, fn, forward: bool) -> None:
    ended = None
    with watch:
        try:
            fn()
        except (NotImplementedError, RuntimeError) as exc:
            ended = exc
    _assert_one_device(watch, ended, forward=forward)


@pytest.mark.parametrize("page", ["inspector", "steering"])
def test_the_watch_catches_a_dictionary_on_another_device(meta_ws, monkeypatch, page):
    """The bug the steering page had: the model on the best device, its dictionaries on the CPU. Caught where
    the dictionary is loaded, and (steering) where its direction meets the model's activations."""
    import analysis.dictionaries

    _, watch = meta_ws
    open_dictionary = analysis.dictionaries.open_dictionary

    def on_cpu(ws, name, device=None, con=None):
        return open_dictionary(ws, name, device="cpu", con=con)

    monkeypatch.setattr(analysis.dictionaries, "open_dictionary", on_cpu)
    with watch:
        try:
            UI[page]()
        except (NotImplementedError, RuntimeError):
            pass
    assert any("is on cpu, not meta" in p for p in watch.problems), watch.problems
    if page == "steering":
        assert any("mixes ['cpu', 'meta']" in p for p in watch.problems), watch.problems


def test_the_watch_flags_mixed_devices_but_not_scalars_indices_or_copies():
    cpu, meta = torch.ones(4), torch.ones(4, device=META)
    with DeviceWatch(META) as watch:
        meta * torch.tensor(2.0)  # a 0-d CPU scalar, as CUDA allows
        meta[torch.tensor([0, 2])]  # CPU indices, as CUDA allows
        cpu.to(META) + meta  # the one way across
        torch.nn.Linear(4, 2, device=META)(meta)
    assert watch.problems == [] and watch.forwards["Linear"] == 1
    with DeviceWatch(META) as watch:
        meta @ torch.ones(4, 3)  # torch lets this one through on meta; CUDA would not
        with pytest.raises(RuntimeError):  # this one fails anyway, after the watch saw it
            torch.nn.Linear(4, 2)(meta)
    assert watch.problems == ["matmul mixes ['cpu', 'meta']", "Linear weight is on cpu, not meta",
                              "Linear bias is on cpu, not meta", "linear mixes ['cpu', 'meta']"]


def test_autocast_is_bf16_on_cuda_inside_the_block_only_and_nothing_on_cpu():
    from sae.device import autocast

    before = torch.backends.cuda.matmul.allow_tf32
    with autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        with autocast(torch.device("cuda")):  # on a CPU-only build torch warns and leaves autocast off
            assert torch.backends.cuda.matmul.allow_tf32
            assert torch.get_autocast_dtype("cuda") == torch.bfloat16
    assert torch.backends.cuda.matmul.allow_tf32 == before  # TF32 does not leak into later fp32 work
