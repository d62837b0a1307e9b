"""JSON (round trip of labels and notes), Markdown text, the Neuronpedia layout, and import-report's errors."""
from __future__ import annotations

import json

import pytest

from analysis.reports import Selection, collect_report, import_report, render_markdown, write_report
from analysis.reports.json_io import SCHEMA, SCHEMA_VERSION, report_to_dict
from analysis.reports.markdown import example_md, md
from analysis.reports.neuronpedia import batch_cards, export_neuronpedia
from store import InputError, Workspace, connect, session
from store.queries import Example, feature_card
from tests.factories import HOSTILE_LABEL, build_report_store
from tests.helpers import run_cli

LABELS_SQL = "SELECT feature, label, notes FROM feature_labels WHERE dictionary = ? ORDER BY feature"


@pytest.fixture(scope="module")
def store():
    con = connect(":memory:")
    build_report_store(con, n_features=24)
    con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES "
                "('topk-demo', 9, 'ünïcødé → ✓', 'tab\there\r\nand a \"quote\"')")
    yield con
    con.close()


def fresh_workspace(root) -> Workspace:
    space = Workspace.resolve(root)
    with session(space.db_path) as con:
        build_report_store(con, n_features=24, labels=False)
    return space


def test_json_round_trip_restores_labels_and_notes_exactly(store, tmp_path, monkeypatch, capsys):
    report = collect_report(store, "topk-demo", Selection(features=(1, 2, 5, 6, 9, 10)))  # 10 has no label
    path = write_report(report, "json", tmp_path / "r.json")[0]
    data = json.loads(path.read_text())
    assert (data["schema"], data["version"]) == (SCHEMA, SCHEMA_VERSION)
    assert data == json.loads(json.dumps(report_to_dict(report)))  # strict JSON, nothing lost on the way
    target = fresh_workspace(tmp_path / "other")
    code, out, _ = run_cli(monkeypatch, capsys, "import-report", str(path), "-w", str(target.root))
    assert code in (0, None) and "5 feature(s) into topk-demo" in out
    with session(target.db_path) as con:
        restored = con.execute(LABELS_SQL, ["topk-demo"]).fetchall()
    original = store.execute(LABELS_SQL, ["topk-demo"]).fetchall()
    assert restored == [r for r in original if r[1] or r[2]]
    assert (2, HOSTILE_LABEL, "<b>bold?</b>") in restored
    assert (9, "ünïcødé → ✓", 'tab\there\r\nand a "quote"') in restored


def test_import_into_another_dictionary_and_bad_input(store, tmp_path):
    path = write_report(collect_report(store, "topk-demo", Selection(features=(1, 2))), "json", tmp_path / "r.json")[0]
    target = fresh_workspace(tmp_path / "other")
    with session(target.db_path) as con:
        assert import_report(con, path, "mp-demo") == ("mp-demo", 2)
        assert con.execute(LABELS_SQL, ["mp-demo"]).fetchall()[0] == (1, "cat and dog", "fires on pets\nsecond line")
        with pytest.raises(InputError, match=r"unknown dictionary 'nope' in this workspace \(known: topk-demo"):
            import_report(con, path, "nope")
        con.execute("INSERT INTO dictionaries (name, model, hook, arch, d_in, d_sae, path) "
                    "VALUES ('wide', 'm', 'h', 'topk', 64, 999, '/x')")
        with pytest.raises(InputError, match="d_sae=24 but 'wide' has d_sae=999"):
            import_report(con, path, "wide")
        (tmp_path / "junk.json").write_text('{"schema": "other"}')
        with pytest.raises(InputError, match="not a SparseScope JSON report"):
            import_report(con, tmp_path / "junk.json")
        (tmp_path / "future.json").write_text(json.dumps({"schema": SCHEMA, "version": 99}))
        with pytest.raises(InputError, match="schema version 99"):
            import_report(con, tmp_path / "future.json")
        with pytest.raises(InputError, match="no such file"):
            import_report(con, tmp_path / "missing.json")
        assert con.execute(LABELS_SQL, ["wide"]).fetchall() == []


def test_markdown_text_tables_and_images(store):
    report = collect_report(store, "topk-demo", Selection(features=(1, 2, 3)))
    text, images = render_markdown(report, "r_files")
    assert text.startswith("# SparseScope report: topk-demo") and "| promoted | logit | suppressed | logit |" in text
    assert "\\<script\\>alert('x')\\</script\\> &amp; \"quotes\"" in text and "<script>" not in text
    assert set(images) == {"r_files/fvu_vs_l0.png", *{f"r_files/feature_{f}_hist.png" for f in (1, 2, 3)}}
    assert all(f"]({rel})" in text for rel in images)
    assert "[#2](#f-2)" in text and '<a id="f-1"></a>' in text
    bare, none = render_markdown(report, "r_files", with_images=False)
    assert none == {} and "](r_files/" not in bare and "Figures left out" in bare


def test_markdown_example_bolds_active_runs():
    ex = Example("top", None, 0, "c", 0, 3, 2.5, 0, [0.0, 1.0, 2.0, 2.5, 0.0, float("nan")],
                 [" the", " big", " cat|", " *sat*", " on", " x"])
    assert example_md(ex) == " the **big cat\\| \\*sat\\* ⟨2.5⟩** on"  # NaN: past the context's end
    assert md("a|b\nc") == "a\\|b↵c"


def test_import_report_keeps_local_labels_and_notes_where_the_report_has_none(tmp_path):
    report = {"schema": "sparsescope-report", "version": 1, "dictionary": {"name": "topk-demo", "d_sae": 24},
              "features": [{"feature": 1, "label": "theirs", "notes": ""},
                           {"feature": 2, "label": "", "notes": "their notes"},
                           {"feature": 3, "label": "", "notes": ""},
                           {"feature": 4, "label": "new", "notes": "new notes"}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    con = connect(":memory:")
    build_report_store(con, n_features=24, labels=False)
    con.execute("INSERT INTO feature_labels (dictionary, feature, label, notes) VALUES ('topk-demo', 1, 'mine', "
                "'my notes'), ('topk-demo', 2, 'my label', 'old notes'), ('topk-demo', 3, 'kept', 'kept too')")
    assert import_report(con, path) == ("topk-demo", 3)
    assert con.execute(LABELS_SQL, ["topk-demo"]).fetchall() == [
        (1, "theirs", "my notes"), (2, "my label", "their notes"), (3, "kept", "kept too"), (4, "new", "new notes")]


def test_neuronpedia_layout(store, tmp_path):
    out, n = export_neuronpedia(store, "attn-demo", tmp_path / "np", batch_size=8)
    dead = [f for (f,) in store.execute("SELECT feature FROM features WHERE dictionary = 'attn-demo' AND count = 0 "
                                        "ORDER BY feature").fetchall()]
    assert n == 24 - len(dead)
    skipped = json.loads((out / "skipped_indexes.json").read_text())
    assert skipped["skipped_indexes"] == dead and skipped["sae_set"] == "attn-demo" and skipped["layer"] == 1
    batches = sorted(out.glob("batch-*.json"))
    assert len(batches) == -(-n // 8)
    batch = json.loads(batches[0].read_text())
    assert set(batch) == {"model_id", "layer", "sae_set", "features"} and batch["model_id"] == "tiny-demo"
    feature = batch["features"][0]
    for key in ("feature_index", "activations", "pos_str", "pos_values", "neg_str", "neg_values", "frac_nonzero",
                "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
                "decoder_weights_dist", "n_prompts_total", "n_tokens_in_prompt", "dataset",
                "correlated_features_indices"):
        assert key in feature, key
    assert len(feature["pos_str"]) == len(feature["pos_values"]) == 10
    assert abs(sum(feature["decoder_weights_dist"]) - 1) < 0.01
    top = [a for a in feature["activations"] if a["bin_min"] == -1]
    bands = [a for a in feature["activations"] if a["bin_min"] != -1]
    assert len(top) == 20 and len(bands) == 50
    assert all(len(a["tokens"]) == len(a["values"]) == 17 for a in feature["activations"])
    assert all(0 <= a["bin_min"] < a["bin_max"] and 0 <= a["bin_contains"] <= 1 for a in bands)
    with pytest.raises(InputError, match="not empty"):
        export_neuronpedia(store, "attn-demo", out)
    with pytest.raises(InputError, match=r"feature\(s\) not in dictionary 'attn-demo': 77"):
        export_neuronpedia(store, "attn-demo", tmp_path / "np2", features=(1, 77))
    assert not (tmp_path / "np2").exists()


def test_batch_cards_match_feature_card(store):
    cards = batch_cards(store, "mp-demo", "tiny-demo", "demo-text", 400_000, [0, 3, 7])
    for f in (0, 3, 7):
        one = feature_card(store, "mp-demo", f)
        for part in ("count", "density", "max_act", "histogram", "top_examples", "quantile_examples", "promoted",
                     "suppressed"):
            assert getattr(cards[f], part) == getattr(one, part), (f, part)
