"""The "Export report" control on the UI pages, and the report bytes it serves."""
from __future__ import annotations

import io
import json
import zipfile

from app.ui.data import cache
from app.ui.data.reports import report_file
from app.ui.widgets.report import available_formats
from tests.ui_store import open_page


def test_feature_and_browser_pages_offer_the_export(ui_ws):
    at = open_page("views/feature.py", dict="topk-demo", feature=3)
    assert not at.exception
    assert [b.proto.label for b in at.get("download_button")] == ["Export report"]
    picker = next(s for s in at.selectbox if s.label == "format")
    assert picker.options[0] == "HTML" and len(picker.options) == len(available_formats())
    at = open_page("views/browser.py", dict="topk-demo")
    assert not at.exception and len(at.get("download_button")) == 1


def test_report_file_builds_the_selected_report(ui_ws):
    db = str(ui_ws / "sparsescope.duckdb")
    html = report_file(db, cache.version(db), "topk-demo", (1, 2), "html", (), False).decode()
    assert html.startswith("<!DOCTYPE html>") and 'id="f-1"' in html and 'id="f-2"' in html
    data = json.loads(report_file(db, cache.version(db), "topk-demo", (1,), "json", (), False))
    assert data["features"][0]["label"] == "first letters"  # the test store's label
    if "md" in available_formats():
        archive = zipfile.ZipFile(io.BytesIO(report_file(db, cache.version(db), "topk-demo", (1,), "md", (), False)))
        assert "report.md" in archive.namelist() and any(n.endswith(".png") for n in archive.namelist())


def test_steering_page_offers_a_report_per_stored_run(ui_ws):
    from store import session
    from store.steering import add_run

    config = {"prompt": "The cat", "interventions": [{"mode": "add", "dictionary": "topk-demo", "feature": 1,
                                                      "strength": 2.0}], "seed": 0}
    with session(ui_ws / "sparsescope.duckdb") as con:
        run_id = add_run(con, "tiny-random", "topk-demo", config, ["a"], ["b"], {"kl_mean": 0.5})
    at = open_page("views/steering.py")
    assert not at.exception
    assert [b.proto.label for b in at.get("download_button")] == ["Report"]
    db = str(ui_ws / "sparsescope.duckdb")
    html = report_file(db, cache.version(db), "topk-demo", (1,), "html", (str(run_id),), False).decode()
    assert f'id="run-{run_id}"' in html.split('id="f-1"')[1]  # the run sits in its feature's card


def test_heads_page_offers_a_report_with_head_scores(heads_ws):
    at = open_page("views/heads.py")
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Export report (codebook-demo + head scores)"]  # no attention-output dictionary here
    db = str(heads_ws / "sparsescope.duckdb")
    html = report_file(db, cache.version(db), "codebook-demo", None, "html", (), True, 3).decode()
    assert html.count('<section class="card"') == 3 and 'id="heads"' in html
