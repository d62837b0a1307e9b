"""Activation patching on the heads page: deep link, the form, the heatmaps' values and bad input."""
import json

import numpy as np
import pytest

from tests.ui_store import MODEL, open_page, texts

PAGE = "views/heads.py"
PAIR = dict(clean="abcXdef", corrupted="abcYdef", answer="g", wrong="h")

pytestmark = pytest.mark.usefixtures("one_thread")


def _heatmaps(at) -> list[dict]:
    """The patching heatmaps' plotly traces (the last two charts of the page)."""
    return [json.loads(chart.proto.spec)["data"][0] for chart in at.get("plotly_chart")[-2:]]


def test_a_link_with_every_input_shows_both_heatmaps_with_the_engines_values(heads_ws):
    from analysis.heads.patching import activation_patching
    from sae.models import load_model

    at = open_page(PAGE, layer=0, head=0, **PAIR)
    assert not at.exception and not at.error, [e.value for e in at.error]
    heads, resid = _heatmaps(at)
    expected = activation_patching(load_model(MODEL, device="cpu"), **PAIR)
    assert np.allclose(np.array(heads["z"], dtype=float), expected.heads, atol=1e-6)
    assert np.allclose(np.array(resid["z"], dtype=float), expected.resid, atol=1e-6)
    assert resid["x"][4] == "4: X / Y" and resid["x"][1] == "1: a"
    assert "Head outputs" in texts(at) and "Residual stream" in texts(at)


def test_the_form_runs_the_patch_and_puts_its_inputs_in_the_url(heads_ws):
    at = open_page(PAGE, layer=0, head=0)
    assert not at.exception and not at.error
    charts = len(at.get("plotly_chart"))  # nothing is patched before the button is pressed
    for label, value in (("clean prompt", "The cat"), ("corrupted prompt", "The dog"),
                         ("answer token", "s"), ("wrong token", "!")):
        next(w for w in [*at.text_area, *at.text_input] if w.label.startswith(label)).set_value(value)
    next(b for b in at.button if b.label == "Patch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == charts + 2
    assert {k: at.query_params[k] for k in PAIR} == {"clean": "The cat", "corrupted": "The dog", "answer": "s",
                                                     "wrong": "!"}


@pytest.mark.parametrize("change, needle", [
    (dict(corrupted="abcYYdef"), "the clean prompt has 8, the corrupted prompt 9"),
    (dict(answer="gg"), "the answer 'gg' is 2 tokens"),
    (dict(wrong="g"), "the same token"),
])
def test_bad_pairs_and_answers_are_one_error(heads_ws, change, needle):
    at = open_page(PAGE, layer=0, head=0, **(PAIR | change))
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value.replace("\\", "")
    assert "Head 0.0" in texts(at)  # the rest of the page is drawn


def test_a_second_pair_typed_after_a_patch_is_the_one_patched(heads_ws):
    """The inputs of the first patch go into the URL, the boxes' defaults: the next inputs typed must be patched."""
    at = open_page(PAGE, layer=0, head=0)
    for pair in (dict(clean="The cat", corrupted="The dog", answer="s", wrong="!"), PAIR):
        for label, key in (("clean prompt", "clean"), ("corrupted prompt", "corrupted"), ("answer token", "answer"),
                           ("wrong token", "wrong")):
            next(w for w in [*at.text_area, *at.text_input] if w.label.startswith(label)).set_value(pair[key])
        next(b for b in at.button if b.label == "Patch").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert {k: at.query_params[k] for k in PAIR} == pair
        assert len(_heatmaps(at)[1]["x"]) == len(pair["clean"]) + 1  # a residual column per token (BOS first)
