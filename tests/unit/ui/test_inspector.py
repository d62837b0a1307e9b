"""Prompt inspector: tokens coloured by their strongest feature, the features of a picked token as links."""
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
