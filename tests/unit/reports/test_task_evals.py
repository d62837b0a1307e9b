"""Task evaluations in a report: the HTML section (the Evaluations page's chart with the supervised reference, the
table, the command), the Markdown table, the JSON results (and import-report still takes the file), a corrupt
result file noted, and no section for a dictionary without evaluations."""
from __future__ import annotations

import json
import re

import pytest

from analysis.reports import Selection, collect_report, render_html, render_markdown, write_report
from analysis.task_view import REFERENCE
from store import Workspace, connect, session
from tests.factories import build_report_store
from tests.helpers import run_cli
from tests.task_evals import save_task_eval, task_eval_result

RUN = "ioi-blocks.0.hook_resid_post-seed0-edit2"
COMMAND = "sparsescope eval-task ioi --dictionary topk-demo --prompts 40 --fit-prompts 80 --seed 0 --edit-features 2"


@pytest.fixture
def store(tmp_path):
    """A report store whose dictionaries' folders lie under tmp_path; topk-demo and mp-demo evaluated alike."""
    con = connect(":memory:")
    build_report_store(con, n_features=24, path_root=str(tmp_path))
    save_task_eval(tmp_path / "dictionaries" / "topk-demo", task_eval_result("topk-demo", sufficiency=0.25))
    save_task_eval(tmp_path / "dictionaries" / "mp-demo", task_eval_result("mp-demo", sufficiency=0.5))
    yield con
    con.close()


def _figures(html: str) -> list[dict]:
    block = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_html_has_the_chart_with_the_supervised_reference_and_the_table(store):
    html = render_html(collect_report(store, "topk-demo", Selection(features=(1,))))
    assert '<a href="#task-evals">Task evaluations</a>' in html
    section = html[html.index('<section id="task-evals">'):]
    section = section[:section.index("</section>")]
    assert f"<h3>{RUN}</h3>" in section and "IO &gt; S 99.5%, logit diff 5.14" in section
    assert f"<code>{COMMAND}</code>" in section
    assert "<th>sufficiency (task features)</th><td class=\"num\">1.080</td><td class=\"num\">0.250</td>" \
           "<td class=\"num\">0.500</td>" in section
    assert "<th>task features</th><td class=\"num\">74</td>" in section
    (fig,) = [f["fig"] for f in _figures(html) if f["id"] == "plot-task-eval-0"]
    assert [t["name"] for t in fig["data"] if t["type"] == "bar"] == ["topk-demo", "mp-demo"]
    (reference,) = [t for t in fig["data"] if t["name"] == REFERENCE]
    assert reference["y"][0] == 1.08


def test_markdown_has_the_table(store):
    text, _ = render_markdown(collect_report(store, "topk-demo", Selection(features=(1,))), with_images=False)
    assert "## Task evaluations" in text and "- [Task evaluations](#task-evals)" in text
    assert "| figure | supervised | topk-demo | mp-demo |" in text
    assert "| sufficiency (task features) | 1.080 | 0.250 | 0.500 |" in text
    assert f"Reproduce it: `{COMMAND}`" in text


def test_json_holds_the_results_and_import_report_takes_the_file(store, tmp_path, monkeypatch, capsys):
    report = collect_report(store, "topk-demo", Selection(features=(1, 2)))
    data = json.loads(write_report(report, "json", tmp_path / "r.json")[0].read_text())
    (entry,) = data["task_evaluations"]
    assert entry["run"] == RUN and entry["command"] == COMMAND and entry["seed"] == 0
    assert entry["result"] == task_eval_result("topk-demo", sufficiency=0.25)
    assert [c["dictionary"] for c in entry["compared_with"]] == ["mp-demo"]
    assert entry["compared_with"][0]["figures"]["sufficiency"] == 0.5
    space = Workspace.resolve(tmp_path / "other")
    with session(space.db_path) as target:
        build_report_store(target, n_features=24, labels=False)
    code, out, _ = run_cli(monkeypatch, capsys, "import-report", str(tmp_path / "r.json"), "-w", str(space.root))
    assert code in (0, None) and "into topk-demo" in out


def test_a_corrupt_file_is_noted_and_a_dictionary_without_evaluations_has_no_section(store, tmp_path):
    (tmp_path / "dictionaries" / "topk-demo" / "task_evals" / "broken.json").write_text("[", encoding="utf-8")
    report = collect_report(store, "topk-demo", Selection(features=(1,)))
    assert len(report.task_evals) == 1 and "broken.json: skipped" in report.task_eval_notes[0]
    assert "broken.json: skipped" in render_html(report)
    other = collect_report(store, "attn-demo", Selection(features=(1,)))
    assert other.task_evals == [] and 'id="task-evals"' not in render_html(other)
    assert "Task evaluations" not in render_markdown(other, with_images=False)[0]
    assert json.loads(write_report(other, "json", tmp_path / "o.json")[0].read_text())["task_evaluations"] == []
