"""The workbench in headless Chromium, on a store the CLI built on the tiny model (the `workbench` fixture of
conftest.py): jobs started, watched, reloaded and cancelled from the Jobs page, search by text, code search, a hook_z
feature's head attribution and DFA, an MP pursuit trace, activation patching. Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.helpers import screenshot, settled

pytestmark = pytest.mark.browser

TRAINED = "jobs-topk"
CANCELLED = "jobs-cancelled"
TEXT = "The quick brown fox jumps over the lazy dog."
GRID_ROWS = """el => Array.from(el.querySelectorAll('table[role=grid] tr'))
                     .map(tr => Array.from(tr.children).map(cell => cell.textContent))"""
"""A dataframe's rows as its grid's accessible table holds them (header first; the cells in view only)."""
PROGRESS_PAST = """n => {
    const bar = document.querySelector('[data-testid="stProgress"]');
    const done = bar && bar.innerText.match(/: ([\\d,]+) \\/ [\\d,]+/);
    return done && Number(done[1].replaceAll(',', '')) > n ? Number(done[1].replaceAll(',', '')) : null;
}"""
"""The count a job's progress bar shows once it is past n (null before)."""


def _grid(page, nth: int = 0, min_rows: int = 2) -> list[list[str]]:
    """The rows of the page's nth dataframe, once it has drawn at least min_rows (the header included)."""
    grid = page.get_by_test_id("stDataFrame").nth(nth)
    grid.wait_for()
    handle = page.wait_for_function(f"el => {{ const rows = ({GRID_ROWS})(el); "
                                    f"return rows.length >= {min_rows} ? rows : null }}", arg=grid.element_handle())
    return handle.json_value()


def _progress_past(page, n: int, timeout_ms: float = 60_000) -> int:
    return page.wait_for_function(PROGRESS_PAST, arg=n, timeout=timeout_ms).json_value()


def _submit(page, label: str) -> None:
    page.get_by_test_id(re.compile("stBaseButton-.*FormSubmit")).filter(has_text=label).click()


def _errors(page):
    return page.get_by_test_id("stAlertContentError")


def _train_form(page, url: str, **values: str) -> None:
    """The Jobs page's train form with topk chosen and `values` typed (option name without dashes: text)."""
    page.goto(f"{url}/jobs?command=train")
    page.get_by_test_id(re.compile("stBaseButton-.*FormSubmit")).filter(has_text="Start").wait_for()
    page.get_by_role("combobox", name="--arch *").click()
    page.get_by_role("option", name="topk", exact=True).click()
    for name, value in values.items():
        page.get_by_role("textbox", name=f"--{name.replace('_', '-')}", exact=True).fill(value)


def _start(page) -> str:
    """Press Start; the started job's id."""
    _submit(page, "Start")
    started = page.get_by_text("started job")
    started.wait_for()
    return re.search(r"started job (\S+):", started.inner_text()).group(1)


def _cancel_button(page, job_id: str):
    """The Cancel button of a running job (its widget key names the job)."""
    return page.locator(f".st-key-cancel-{job_id} button")


def _job_row(page, job_id: str) -> list[str]:
    rows = _grid(page)
    header, body = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    assert {"job", "outcome", "exit code"} <= set(header), header
    (row,) = [r for r in body if r["job"] == job_id]
    return row


def _job_count(ws) -> int:
    from store import session

    with session(ws / "sparsescope.duckdb", read_only=True) as con:
        return con.execute("SELECT count(*) FROM jobs").fetchone()[0]


# ------------------------------------------------------------------------------------------- jobs

def test_a_bad_option_is_one_error_and_starts_no_job(workbench, page):
    before = _job_count(workbench.ws)
    _train_form(page, workbench.url, k="abc")
    _submit(page, "Start")
    _errors(page).first.wait_for()
    settled(page)
    assert _errors(page).count() == 1
    assert "--k" in _errors(page).first.inner_text()
    assert page.get_by_text("started job").count() == 0
    assert _job_count(workbench.ws) == before
    screenshot(page, "jobs-bad-option")


def test_a_training_job_runs_survives_a_reload_and_its_dictionary_appears_on_home(workbench, page):
    url = workbench.url
    _train_form(page, url, activations=workbench.cache, tokens="600000", batch="1024", name=TRAINED, device="cpu")
    job_id = _start(page)
    first = _progress_past(page, 0)  # training has started: the bar shows tokens done
    screenshot(page, "jobs-running")
    second = _progress_past(page, first)  # and it advances while the page watches
    page.reload()  # a new browser session: the job is read from the store
    page.get_by_test_id("stMarkdown").filter(has_text=f"running · {job_id}").wait_for()
    _cancel_button(page, job_id).wait_for()
    _progress_past(page, second)
    _cancel_button(page, job_id).wait_for(state="detached", timeout=180_000)  # the job has ended
    row = _job_row(page, job_id)
    assert (row["outcome"], row["exit code"]) == ("finished", "0"), row
    page.get_by_test_id("stCode").filter(has_text=f"dictionary {TRAINED} (topk").wait_for()
    screenshot(page, "jobs-done")

    page.goto(f"{url}/?view=FVU+against+L0")  # Home, with the chart of every dictionary's FVU against L0
    page.locator(".js-plotly-plot text", has_text=TRAINED).wait_for()
    settled(page)
    metrics = dict(zip(page.get_by_test_id("stMetricLabel").all_inner_texts(),
                       page.get_by_test_id("stMetricValue").all_inner_texts()))
    assert metrics["dictionaries"] == "5", metrics  # the demo's three, the hook_z one and the new one
    screenshot(page, "jobs-home")


def test_a_cancelled_job_is_listed_cancelled_and_leaves_no_dictionary(workbench, page):
    from store import session

    _train_form(page, workbench.url, activations=workbench.cache, tokens="50000000", name=CANCELLED, device="cpu")
    job_id = _start(page)
    _progress_past(page, 0)  # cancel a step loop that runs, not a process still importing torch
    _cancel_button(page, job_id).click()
    page.get_by_text("cancelling:").wait_for()
    _cancel_button(page, job_id).wait_for(state="detached", timeout=90_000)
    page.reload()  # a fresh session lists the newest job's log first
    row = _job_row(page, job_id)
    assert (row["outcome"], row["exit code"]) == ("cancelled", "130"), row
    page.get_by_test_id("stCode").filter(has_text="interrupted: training stopped at step").wait_for()
    screenshot(page, "jobs-cancelled")
    assert not (workbench.ws / "dictionaries" / CANCELLED).exists()
    with session(workbench.ws / "sparsescope.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*) FROM dictionaries WHERE name = ?", [CANCELLED]).fetchone()[0] == 0
        assert con.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0] == "cancelled"


# ------------------------------------------------------------------------------------------- analysis pages

def test_search_by_text_groups_features_by_dictionary_and_links_to_their_pages(workbench, page):
    page.goto(f"{workbench.url}/search")
    page.get_by_role("textbox", name="text").fill(TEXT)
    page.get_by_role("spinbutton", name="features per dictionary").fill("3")
    _submit(page, "Search")
    for hook in ("blocks.0.hook_resid_post", "blocks.1.attn.hook_z"):  # the groups draw one after another
        page.locator("h3", has_text=hook).wait_for()
    for name in ("topk-demo", "mp-demo", "codebook-demo", workbench.attn_dict):  # the analysed ones, 3 links each
        page.locator("strong", has_text=re.compile(f"^{name}$")).wait_for()
        page.locator(f"[data-testid=stPageLink] a[href*='dict={name}&']").nth(2).wait_for()
    settled(page)
    assert "text=The+quick" in page.url
    for name in ("topk-demo", "mp-demo", "codebook-demo", workbench.attn_dict):
        assert page.locator(f"[data-testid=stPageLink] a[href*='dict={name}&']").count() == 3, name
    screenshot(page, "search")
    link = page.get_by_test_id("stPageLink").first.locator("a")
    dictionary, feature = re.search(r"dict=([^&]+)&feature=(\d+)", link.get_attribute("href")).groups()
    link.click()
    page.wait_for_url(re.compile(rf"/feature\?dict={dictionary}&feature={feature}"))
    page.get_by_text("Top activating contexts").wait_for()
    page.locator("h2", has_text=f"#{feature}").first.wait_for()


def test_code_search_ranks_codes_and_a_bad_regex_is_one_error(workbench, page):
    page.goto(f"{workbench.url}/codes?dict=codebook-demo")
    regex = page.get_by_role("textbox", name=re.compile("^regular expression"))
    regex.fill("[aeiou]")
    _submit(page, "Search")
    rows = _grid(page)
    settled(page)
    header, body = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    assert header[:4] == ["code", "precision", "recall", "positions"], header
    precision = [float(r["precision"]) for r in body]
    assert body and precision == sorted(precision, reverse=True) and precision[0] > 0
    assert all(r["code"].startswith("feature?dict=codebook-demo&feature=") for r in body)
    screenshot(page, "codes")
    regex.fill("(unclosed")
    _submit(page, "Search")
    _errors(page).first.wait_for()
    settled(page)
    assert _errors(page).count() == 1 and "does not compile" in _errors(page).first.inner_text()
    assert page.get_by_test_id("stDataFrame").count() == 0
    screenshot(page, "codes-bad-regex")


def test_a_hook_z_feature_shows_head_attribution_and_dfa(workbench, page):
    page.goto(f"{workbench.url}/feature?dict={workbench.attn_dict}&feature={workbench.attn_feature}")
    page.get_by_role("heading", name="Head attribution").wait_for()
    bars = page.locator(".js-plotly-plot .barlayer .point")
    bars.first.wait_for()
    assert bars.count() == 4  # one bar per head of the tiny model
    assert page.locator(".js-plotly-plot .heatmaplayer").count() == 0  # DFA runs on request only
    page.get_by_role("button", name="DFA of the top examples").click()
    page.wait_for_url(re.compile(r"dfa=0"))
    page.locator(".js-plotly-plot .heatmaplayer image").first.wait_for()
    settled(page)
    page.get_by_text(re.compile(r"with the bias terms .* that is the pre-activation")).wait_for()
    heads = [row[0] for row in _grid(page, nth=-1, min_rows=5)[1:]]
    assert heads == ["H0", "H1", "H2", "H3"]
    page.get_by_role("heading", name="Head attribution").scroll_into_view_if_needed()
    screenshot(page, "dfa")


def test_an_mp_pursuit_trace_in_the_inspector(workbench, page):
    params = dict(text="Pursuit, step by step.", dict="mp-demo", token=4, trace="mp-demo")
    page.goto(f"{workbench.url}/inspector?{urlencode(params)}")
    page.get_by_role("heading", name="Pursuit trace").wait_for()
    chart = page.locator(".js-plotly-plot").filter(has=page.locator("text", has_text="residual norm"))
    chart.locator(".barlayer .point").first.wait_for()
    settled(page)
    steps = chart.locator(".barlayer .point").count()
    rows = _grid(page, nth=-1, min_rows=steps + 1)
    header, body = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    assert header[:4] == ["step", "atom", "coefficient", "residual norm"], header
    assert len(body) == steps > 0
    norms = [float(r["residual norm"]) for r in body]
    assert norms == sorted(norms, reverse=True)
    assert all(r["atom"].startswith("feature?dict=mp-demo&feature=") for r in body)
    page.get_by_text(re.compile(rf"^{steps} steps \(")).wait_for()
    page.get_by_test_id("stDataFrame").last.scroll_into_view_if_needed()  # the chart above it, the table in view
    screenshot(page, "pursuit-trace")


def test_activation_patching_draws_both_heatmaps(workbench, page):
    params = dict(layer=0, head=0, clean="abcXdef", corrupted="abcYdef", answer="g", wrong="h")
    page.goto(f"{workbench.url}/heads?{urlencode(params)}")
    page.get_by_role("tab", name="Activation patching").click()
    panel = page.get_by_role("tabpanel").filter(has_text="Head outputs")
    panel.get_by_text("Residual stream").wait_for()
    heatmaps = panel.locator(".js-plotly-plot .heatmaplayer image")
    heatmaps.nth(1).wait_for()
    settled(page)
    assert heatmaps.count() == 2
    assert panel.locator(".js-plotly-plot text", has_text="4: X / Y").count() == 1  # the position that differs
    assert _errors(page).count() == 0
    panel.scroll_into_view_if_needed()
    screenshot(page, "patching")
