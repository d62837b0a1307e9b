"""Prompt inspector: tokens coloured by their strongest feature, the features of a picked token as links."""
import pytest

from tests.ui_store import DICTIONARIES, open_page, texts

PAGE = "views/inspector.py"


def test_tokens_are_highlighted_and_a_picked_token_lists_features_of_every_dictionary(ui_ws):
    at = open_page(PAGE, text="Hello <b>world</b> & more")
    assert not at.exception and not at.error
    tokens = at.html[0].value
    assert tokens.count('class="tok"') == len("Hello <b>world</b> & more") + 1  # byte tokens after BOS
    # one token per byte: "<", "b", ">" and "&" arrive as their own tokens, escaped
    assert ">&lt;</span>" in tokens and ">&gt;</span>" in tokens and ">&amp;</span>" in tokens
    assert "><</span>" not in tokens and ">&</span>" not in tokens
    assert "rgba(255, 140, 0," in tokens and 'title="#' in tokens
    pick = at.pills[0]
    pick.set_value(3).run()
    assert not at.exception
    shown = texts(at)
    assert "Features on token 3" in shown
    for plan in DICTIONARIES:
        assert f"**{plan.name}**" in shown
    links = [link.proto for link in at.get("page_link")]
    assert links and all(link.page == "feature" for link in links)
    assert {link.query_string.split("&")[0] for link in links} == {f"dict={p.name}" for p in DICTIONARIES}


def test_colour_by_another_dictionary_and_an_empty_prompt(ui_ws):
    at = open_page(PAGE)
    at.selectbox[1].set_value("codebook-demo").run()
    assert not at.exception and at.html[0].value.count('class="tok"') > 10
    at.text_area[0].set_value("   ")
    at.button[0].click().run()
    assert not at.exception and "Type some text" in texts(at)


def test_a_prompt_longer_than_the_limit_is_one_error_line(ui_ws):
    at = open_page(PAGE)
    at.text_area[0].set_value("x" * 4001)
    at.button[0].click().run()
    assert not at.exception
    assert len(at.error) <= 1  # the text area caps input at 4000 characters itself


def test_deep_link_restores_text_dictionary_and_token_and_traces_the_pursuit(ui_ws):
    import torch

    from analysis.features.inspector import site_activations
    from analysis.features.pursuit import pursuit_traces
    from sae.dictionaries import load_dictionary
    from sae.models import load_model
    from tests.ui_store import HOOK, MODEL

    text = "Pursuit, step by step."
    at = open_page(PAGE, text=text, dict="mp-demo", token=4)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.text_area[0].value == text and at.selectbox[1].value == "mp-demo" and at.pills[0].value == 4
    assert at.selectbox[2].value == "mp-demo"  # the trace follows the colouring dictionary when it is MP
    assert {k: at.query_params[k] for k in ("text", "dict", "token", "trace")} == {
        "text": text, "dict": "mp-demo", "token": "4", "trace": "mp-demo"}
    shown = texts(at)
    assert "Features on token 4" in shown and "Pursuit trace" in shown
    figure = at.get("plotly_chart")[-1].proto.spec
    assert '"residual norm"' in figure and '"coefficient"' in figure
    table = at.dataframe[-1].value
    _, acts, _ = site_activations(load_model(MODEL, device="cpu"), HOOK, text)
    with torch.no_grad():
        expected = pursuit_traces(load_dictionary(ui_ws / "dictionaries" / "mp-demo"), acts)[4]
    assert list(table["atom"]) == [f"feature?dict=mp-demo&feature={a}" for a in expected.atoms]
    assert list(table["coefficient"]) == pytest.approx(expected.coeffs, abs=1e-5)
    assert list(table["residual norm"]) == pytest.approx(expected.residual_norms, rel=1e-5)
    assert list(table["residual norm"]) == sorted(table["residual norm"], reverse=True)
    at.pills[0].set_value(2).run()
    assert not at.exception and at.query_params["token"] == "2"


def test_a_residual_threshold_marks_where_adaptive_inference_would_stop(ui_ws):
    at = open_page(PAGE, text="Pursuit, step by step.", dict="mp-demo", token=4)
    n_steps = len(at.dataframe[-1].value)
    assert n_steps > 1 and not any("adaptive inference" in c.value for c in at.caption)
    (box,) = [n for n in at.number_input if n.label.startswith("residual threshold")]
    box.set_value(1e9).run()  # above every residual norm: it stops after the first step
    assert not at.exception and not at.error
    assert f"stops after step 1 of {n_steps}" in texts(at)
    assert "adaptive stop" in at.get("plotly_chart")[-1].proto.spec
    box.set_value(-1.0).run()
    assert not at.exception and len(at.error) == 1
    assert "must be a finite number >= 0" in at.error[0].value.replace("\\", "")
    assert not any("adaptive stop" in c.proto.spec for c in at.get("plotly_chart"))  # bad input stops the page


def test_the_trace_of_a_dictionary_that_is_not_mp_says_it_applies_to_mp(ui_ws):
    at = open_page(PAGE, dict="topk-demo", trace="codebook-demo")
    assert not at.exception and not at.error
    assert at.selectbox[2].value == "codebook-demo"
    (note,) = [i.value for i in at.info if "pursuit trace applies to MP" in i.value]
    assert "codebook dictionary" in note and "on this site: mp-demo" in note
    at = open_page(PAGE, dict="topk-demo")  # no trace asked: the site's MP dictionary is traced
    assert not at.exception and at.selectbox[2].value == "mp-demo" and len(at.dataframe) == 1


@pytest.mark.parametrize("params, needle", [
    (dict(token="two"), "token must be a whole number"),
    (dict(dict="nope"), "unknown dictionary 'nope'"),
    (dict(trace="nope"), "unknown dictionary 'nope' for the pursuit trace"),
])
def test_bad_query_parameters_are_one_error(ui_ws, params, needle):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value.replace("\\", "")


def test_a_token_past_the_end_of_a_shorter_text_falls_back_to_the_strongest(ui_ws):
    at = open_page(PAGE, text="Hi", token=40)
    assert not at.exception and not at.error and at.pills[0].value in (1, 2)


def test_a_second_prompt_typed_after_an_inspection_is_the_one_inspected(ui_ws):
    """The prompt inspected goes into the URL, which is the box's default: the box must keep the next prompt typed
    rather than turn into a new widget holding the previous one."""
    at = open_page(PAGE)
    for text in ("A first prompt.", "Then a second, longer prompt."):
        at.text_area[0].set_value(text)
        at.button[0].click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.query_params["text"] == text and at.text_area[0].value == text
        assert len(at.pills[0].options) == len(text) + 1  # one byte token per character after BOS (tiny model)
