"""A concept neuron of the embedded SmolLM2-135M-Instruct, found by `sparsescope neurons find` and confirmed by
clamping it in the steering engine ("Decoding specialised feature neurons in LLMs with the final projection layer").

Nothing is hard-coded: the animal neuron is the command's best hit for "dog cat" in the last ten layers; its
dictionary is added to a workspace by `neurons add` and loaded by the steering engine from the store.
"""
from __future__ import annotations

import re

import pytest
import torch

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
PROMPT = "What is your favourite animal?"
CLAMP = 30.0
"""Raw activation the neuron is clamped to at every position (its own largest activations are a few units)."""
NEW_TOKENS = 16
DOGS = re.compile(r"dog", re.IGNORECASE)
"""Any mention: the clamped model may run words together ("catdog")."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def animal_neuron(tmp_path_factory):
    """(workspace, layer, neuron, top tokens) of the best `neurons find --concept "dog cat"` hit in layers 20-29."""
    from store import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("neurons") / "ws")
    mp = pytest.MonkeyPatch()
    mp.setenv("COLUMNS", "400")
    from app.commands.common import console

    mp.setattr(console, "width", 400)  # the console may exist already (COLUMNS is read when it is made)
    try:
        code, out, err = _cli(mp, "neurons", "find", "--layers", "20-29", "--concept", "dog cat", "--top", "1",
                              "-w", str(ws.root))
        assert code == 0, err
        row = next(line for line in out.splitlines() if re.match(r"^\W*\d+\W+\d+\W+[+-]\W", line))
        layer, neuron = (int(v) for v in re.findall(r"\d+", row)[:2])
        code, _, err = _cli(mp, "neurons", "add", "--layer", str(layer), "-w", str(ws.root))
        assert code == 0, err
    finally:
        mp.undo()
    return ws, layer, neuron


def _cli(mp, *args):
    import sys

    from app.cli import main

    mp.setattr(sys, "argv", ["sparsescope", *args])
    captured = _Capture()
    with captured:
        try:
            main()
        except SystemExit as exc:
            return exc.code, captured.out.getvalue(), captured.err.getvalue()
    return 0, captured.out.getvalue(), captured.err.getvalue()


class _Capture:
    """stdout and stderr of the CLI's rich consoles (module-scoped fixtures cannot take capsys)."""

    def __enter__(self):
        import io

        from app.commands.common import console, err_console

        self.out, self.err = io.StringIO(), io.StringIO()
        self.saved = (console.file, err_console.file)
        console.file, err_console.file = self.out, self.err

    def __exit__(self, *exc):
        from app.commands.common import console, err_console

        console.file, err_console.file = self.saved


def test_the_animal_neurons_top_tokens_hold_dog_and_cat(animal_neuron):
    from analysis.features.neurons import decode_layer
    from sae.models import load_model

    _, layer, neuron = animal_neuron
    model = load_model(MODEL, device="cpu")
    top_ids, _, bottom_ids, _ = decode_layer(model, layer, tokens=20)
    texts = {model.tokenizer.decode([int(t)]) for t in torch.cat([top_ids[neuron], bottom_ids[neuron]])}
    assert {" dog", " cat"} <= texts, texts


def test_clamping_it_makes_the_greedy_reply_about_dogs(animal_neuron):
    from analysis.steering.lab import Intervention, SteerConfig, SteerRun
    from analysis.steering.runs import load_dictionaries
    from sae.models import load_model
    from store import session

    ws, layer, neuron = animal_neuron
    model = load_model(MODEL, device="cpu")
    config = SteerConfig(prompt=PROMPT, model=model.cfg.model_name, max_new_tokens=NEW_TOKENS, temperature=0.0,
                         interventions=(Intervention("clamp", dictionary=f"neurons-L{layer}", feature=neuron,
                                                     value=CLAMP),))
    with session(ws.db_path, read_only=True) as con:
        dictionaries = load_dictionaries(con, config, ws, device="cpu")
    result = SteerRun(model, config, dictionaries, measured=False).run()
    default, steered = result.default_texts[0], result.steered_texts[0]
    assert not DOGS.search(default), default
    assert DOGS.search(steered), (default, steered)
