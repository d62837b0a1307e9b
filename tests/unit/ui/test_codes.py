"""Code search page: regex in the URL, codes ranked as the CLI ranks them, links, bad input; forcing a code from its
feature page opens the steering page in clamp mode."""
import pytest

from tests.ui_store import CORPUS, CTX, HOOK, MODEL, N_CONTEXTS, open_page, texts

PAGE = "views/codes.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def _expected(root, regex: str, tokens: int):
    """The engine on the same contexts, outside the app."""
    import torch

    from analysis.features.codes import search_tokens
    from sae.dictionaries import load_dictionary
    from sae.models import load_model
    from store import session
    from store.corpora import context_tokens

    with session(root / "sparsescope.duckdb", read_only=True) as con:
        ids = torch.tensor(context_tokens(con, CORPUS, 0, -(-tokens // CTX)))
    with torch.no_grad():
        return search_tokens(load_model(MODEL, device="cpu"), load_dictionary(root / "dictionaries" / "codebook-demo"),
                             HOOK, ids, regex, limit=50)


def test_a_regex_in_the_url_lists_codes_by_precision_with_links(ui_ws):
    at = open_page(PAGE, regex="[aeiou]", tokens=10000)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox[0].value == "codebook-demo" and at.select_slider[0].value == 10000
    table = at.dataframe[0].value
    expected = _expected(ui_ws, "[aeiou]", 10000)
    assert len(table) == len(expected) > 0
    assert list(table["code"]) == [f"feature?dict=codebook-demo&feature={m.code}" for m in expected]
    assert list(table["precision"]) == pytest.approx([m.precision for m in expected])
    assert list(table["recall"]) == pytest.approx([m.recall for m in expected])
    assert list(table["positions"]) == [m.n_active for m in expected]
    assert list(table["precision"]) == sorted(table["precision"], reverse=True)
    assert f"first {N_CONTEXTS * CTX:,} tokens of corpus" in texts(at)  # the whole (small) corpus is read


def test_the_form_puts_the_regex_in_the_url(ui_ws):
    at = open_page(PAGE)
    assert not at.exception and not at.error and "Type a regular expression" in texts(at)
    at.text_input[0].set_value(r"\s")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.query_params["regex"] == r"\s" and at.query_params["dict"] == "codebook-demo"
    assert len(at.dataframe) == 1


@pytest.mark.parametrize("params, needle", [
    (dict(regex="(unclosed"), "does not compile"),
    (dict(regex="a", dict="topk-demo"), "unknown dictionary 'topk-demo' (analysed codebook dictionaries"),
    (dict(regex="a", tokens=7), "tokens must be one of"),
])
def test_bad_input_is_one_error(ui_ws, params, needle):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value.replace("\\", "")
    assert not at.dataframe


def test_a_regex_that_matches_nothing_says_so(ui_ws):
    at = open_page(PAGE, regex="QQQ_never")
    assert not at.exception and not at.error and "no code of codebook" in texts(at)


def test_a_code_page_forces_the_code_in_steering(ui_ws):
    at = open_page("views/feature.py", dict="codebook-demo", feature=3)
    assert not at.exception and not at.error
    (force,) = [link.proto for link in at.get("page_link") if link.proto.label == "Force this code in steering"]
    assert force.page == "steering" and force.query_string == "dict=codebook-demo&feature=3&mode=clamp"
    steer = open_page("views/steering.py", **dict(pair.split("=") for pair in force.query_string.split("&")))
    assert not steer.exception and not steer.error
    assert steer.selectbox[0].value == "codebook-demo" and steer.number_input[0].value == 3
    assert steer.query_params["mode"] == "clamp"  # written back from the mode control, which the link set
    at = open_page("views/feature.py", dict="topk-demo", feature=3)  # not a codebook: no such link
    assert not [link for link in at.get("page_link") if link.proto.label == "Force this code in steering"]


def test_an_unknown_steering_mode_is_one_error(ui_ws):
    at = open_page("views/steering.py", dict="codebook-demo", feature=3, mode="nudge")
    assert not at.exception and len(at.error) == 1 and "unknown mode 'nudge'" in at.error[0].value


def test_a_second_regex_typed_in_the_form_is_the_one_searched(ui_ws):
    """The first search puts the regex in the URL, which becomes the field's default: the field must keep what is
    typed next rather than turn into a new widget holding the old regex."""
    at = open_page(PAGE)
    at.text_input[0].set_value(r"\s")
    at.button[0].click().run()
    assert not at.exception and len(at.dataframe) == 1
    at.text_input[0].set_value("(unclosed")
    at.button[0].click().run()
    assert not at.exception and at.query_params["regex"] == "(unclosed"
    assert len(at.error) == 1 and "does not compile" in at.error[0].value
