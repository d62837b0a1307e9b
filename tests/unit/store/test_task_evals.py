"""Stored task evaluations: every dictionary's task_evals/*.json listed with its settings, unreadable or foreign
files skipped with a note, a moved workspace's folders found under it; the view of one (chart, table, words)."""
import json

import duckdb
import pytest

from analysis.task_view import (
    FLOOR,
    REFERENCE,
    command,
    comparable,
    evals_figure,
    figure_words,
    figures_table,
    model_check_words,
)
from store.dictionaries import DictionaryRow, add_dictionary
from store.migrations import migrate
from store.task_evals import dictionary_folders, files_stamp, task_evals_in, workspace_task_evals
from tests.task_evals import save_task_eval, task_eval_result


@pytest.fixture
def store(tmp_path):
    """An in-memory store with dictionaries a (folder under tmp_path) and b (recorded folder gone)."""
    con = duckdb.connect(":memory:")
    migrate(con)
    for name, folder in (("a", tmp_path / "dictionaries" / "a"), ("b", tmp_path / "elsewhere" / "b")):
        add_dictionary(con, DictionaryRow(name, "tiny-random", "blocks.0.hook_resid_post", "topk", 64, 128, 4,
                                          str(folder)))
    (tmp_path / "dictionaries" / "a").mkdir(parents=True)
    yield con
    con.close()


def test_every_dictionarys_evaluations_are_listed_and_bad_files_skipped_with_a_note(store, tmp_path):
    a = tmp_path / "dictionaries" / "a"
    save_task_eval(a, task_eval_result("a", sufficiency=0.25))
    save_task_eval(a, task_eval_result("a", edit_features=8))
    (a / "task_evals" / "broken.json").write_text("{not json", encoding="utf-8")
    (a / "task_evals" / "other.json").write_text(json.dumps({"task": "ioi"}), encoding="utf-8")
    moved = tmp_path / "dictionaries" / "b"  # b's recorded folder is gone: the workspace's own folder is read
    save_task_eval(moved, task_eval_result("b", sufficiency=0.5, unedited=None))

    evals, notes = workspace_task_evals(store, tmp_path)
    assert [(e.dictionary, e.run, e.edit_features) for e in evals] == [
        ("a", "ioi-blocks.0.hook_resid_post-seed0-edit2", 2), ("a", "ioi-blocks.0.hook_resid_post-seed0-edit8", 8),
        ("b", "ioi-blocks.0.hook_resid_post-seed0-edit2", 2)]
    assert evals[0].task == "ioi" and evals[0].hook == "blocks.0.hook_resid_post" and evals[0].seed == 0
    assert evals[0].learned["sufficiency"] == 0.25 and evals[2].learned["sufficiency"] == 0.5
    assert evals[0].supervised["sufficiency"] == 1.08
    assert len(notes) == 2
    assert "broken.json: skipped, not readable as JSON" in notes[0]
    assert "other.json: skipped, not a task evaluation (no hook)" in notes[1]
    assert dict(dictionary_folders(store, None))["b"] == tmp_path / "elsewhere" / "b"  # no root: as recorded


def test_no_result_folder_is_no_evaluation(store, tmp_path):
    assert workspace_task_evals(store, tmp_path) == ([], [])
    assert files_stamp(dictionary_folders(store, tmp_path)) == ()


def test_the_stamp_changes_when_a_run_saves_a_result(tmp_path):
    folders = [("a", tmp_path)]
    before = files_stamp(folders)
    save_task_eval(tmp_path, task_eval_result("a"))
    assert files_stamp(folders) != before and len(files_stamp(folders)) == 1


def test_the_view_compares_dictionaries_evaluated_alike_against_the_supervised_one(tmp_path):
    save_task_eval(tmp_path / "a", task_eval_result("a", sufficiency=0.25, f1=0.5))
    save_task_eval(tmp_path / "b", task_eval_result("b", sufficiency=0.5, f1=0.25))
    save_task_eval(tmp_path / "c", task_eval_result("c", seed=1))  # another seed: other prompts, not compared
    evals, _ = task_evals_in([(n, tmp_path / n) for n in "cba"])
    picked = evals[0]
    peers = comparable(evals, picked)
    assert [e.dictionary for e in peers] == ["a", "b"]

    fig = evals_figure(picked, peers).to_dict()
    bars = {t["name"]: t for t in fig["data"] if t["type"] == "bar"}
    assert list(bars) == ["a", "b"] and fig["layout"]["barmode"] == "group"
    assert list(bars["b"]["y"]) == [0.5, 1.0, 0.125, 0.375, 0.25, 0.125, 0.0625]
    (reference,) = [t for t in fig["data"] if t["name"] == REFERENCE]
    assert list(reference["y"]) == [1.08, None, 1.05, 0.955, None, None, None]
    (floor,) = [t for t in fig["data"] if t["name"] == FLOOR]
    assert list(floor["x"]) == ["IO edit<br>agreement"] and list(floor["y"]) == [0.0625]

    columns, rows = figures_table(picked, peers)
    table = dict(rows)
    assert columns == ["supervised", "a", "b"]
    assert table["sufficiency (task features)"] == [1.08, 0.25, 0.5]
    assert table["sufficiency (reconstruction)"] == [None, 0.5, 1.0]
    assert table["best f1 per s value"] == [None, 0.25, 0.125] and table["task features"] == [74, 125, 125]
    assert "logit diff kept (task features)" in table and "logit diff kept (reconstruction)" in table

    words = model_check_words(picked.result)
    assert "IO > S 99.5%, logit diff 5.14; mean-ablated 0.31; counterfactual patch -0.84" in words
    assert "changes nothing agrees with it on 6.2%" in words
    assert "red mark: the edit floor" in figure_words(picked.result)
    assert command(picked) == ("sparsescope eval-task ioi --dictionary a --prompts 40 --fit-prompts 80 --seed 0 "
                               "--edit-features 2")


def test_a_result_without_the_edit_floor_draws_none(tmp_path):
    save_task_eval(tmp_path, task_eval_result("a", unedited=None))
    (picked,), _ = task_evals_in([("a", tmp_path)])
    assert FLOOR not in {t["name"] for t in evals_figure(picked, [picked]).to_dict()["data"]}
    assert "changes nothing" not in model_check_words(picked.result) + figure_words(picked.result)
