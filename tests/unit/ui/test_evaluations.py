"""Evaluations page: the stored task evaluations, the chosen one's model check, its chart (bars per learned
dictionary evaluated alike, the supervised dictionary as the reference, the edit floor), its table and command;
the empty state, a corrupt file noted, bad URL parameters."""
import json
from pathlib import Path

import pytest

from analysis.task_view import FLOOR, REFERENCE
from tests.helpers import WORD_JOINER
from tests.task_evals import save_task_eval, task_eval_result
from tests.ui_store import open_page, texts

PAGE = "views/evaluations.py"
RUN = "ioi-blocks.0.hook_resid_post-seed0-edit2"

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(ws: Path, name: str) -> Path:
    return ws / "dictionaries" / name


@pytest.fixture
def evals_ws(ui_ws):
    """The demo workspace with topk-demo and mp-demo evaluated alike (edit 2), and topk-demo once more (edit 8)."""
    from store import session

    with session(ui_ws / "sparsescope.duckdb") as con:  # the copy's own folders, not those of the workspace copied
        for name in ("topk-demo", "mp-demo"):
            con.execute("UPDATE dictionaries SET path = ? WHERE name = ?", [str(_folder(ui_ws, name)), name])
    save_task_eval(_folder(ui_ws, "topk-demo"), task_eval_result("topk-demo", sufficiency=0.25, f1=0.5))
    save_task_eval(_folder(ui_ws, "topk-demo"), task_eval_result("topk-demo", edit_features=8, sufficiency=0.75))
    save_task_eval(_folder(ui_ws, "mp-demo"), task_eval_result("mp-demo", sufficiency=0.5, f1=0.25))
    return ui_ws


def _figure(at) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def _shown(at) -> str:
    return texts(at).replace("\\", "").replace(WORD_JOINER, "")


def test_no_evaluation_says_which_command_makes_one(ui_ws):
    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert "sparsescope eval-task ioi --dictionary NAME" in texts(at)
    assert not at.get("plotly_chart")


def test_an_evaluation_is_drawn_with_the_supervised_reference_and_its_table(evals_ws):
    at = open_page(PAGE, dict="topk-demo", run=RUN)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.query_params["dict"] == "topk-demo" and at.query_params["run"] == RUN
    figure = _figure(at)
    bars = {t["name"]: t["y"] for t in figure["data"] if t["type"] == "bar"}
    assert list(bars) == ["topk-demo", "mp-demo"]  # the picked one first, then those evaluated alike
    assert bars["topk-demo"][0] == 0.25 and bars["mp-demo"][0] == 0.5
    (reference,) = [t for t in figure["data"] if t["name"] == REFERENCE]
    assert reference["y"][:4] == [1.08, None, 1.05, 0.955]
    (floor,) = [t for t in figure["data"] if t["name"] == FLOOR]
    assert floor["y"] == [0.0625]

    table = at.dataframe[0].value.set_index("figure")
    assert list(table.columns) == ["supervised", "topk-demo", "mp-demo"]
    assert table.loc["sufficiency (task features)"].tolist() == ["1.080", "0.250", "0.500"]
    assert table.loc["best f1 per io value", "mp-demo"] == "0.250"
    assert table.loc["best f1 per io value", "supervised"] == "-"  # the supervised dictionary has no F1
    shown = _shown(at)
    assert "IO > S 99.5%, logit diff 5.14; mean-ablated 0.31; counterfactual patch -0.84" in shown
    (code,) = at.code
    assert code.value == ("sparsescope eval-task ioi --dictionary topk-demo --prompts 40 --fit-prompts 80 --seed 0 "
                          "--edit-features 2")


def test_another_run_is_chosen_from_the_url(evals_ws):
    at = open_page(PAGE, dict="topk-demo", run=RUN.replace("edit2", "edit8"))
    assert not at.exception and not at.error
    bars = {t["name"]: t["y"] for t in _figure(at)["data"] if t["type"] == "bar"}
    assert list(bars) == ["topk-demo"] and bars["topk-demo"][0] == 0.75


def test_a_corrupt_file_is_noted_and_the_rest_shown(evals_ws):
    (_folder(evals_ws, "mp-demo") / "task_evals" / "broken.json").write_text("{", encoding="utf-8")
    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert len(at.warning) == 1 and "broken.json: skipped" in at.warning[0].value.replace("\\", "")
    assert at.selectbox[0].value == "mp-demo" and at.get("plotly_chart")


@pytest.mark.parametrize("params, needle", [
    (dict(dict="nope"), "no task evaluation of dictionary 'nope' (evaluated: mp-demo, topk-demo)"),
    (dict(dict="mp-demo", run="ioi-x"), "no evaluation 'ioi-x' of mp-demo (stored: " + RUN),
])
def test_bad_input_is_one_error(evals_ws, params, needle):
    at = open_page(PAGE, **params)
    assert not at.exception
    assert len(at.error) == 1 and needle in at.error[0].value.replace("\\", "").replace(WORD_JOINER, "")
    assert not at.get("plotly_chart")
