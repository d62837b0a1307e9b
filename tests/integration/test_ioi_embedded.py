"""The IOI task on the embedded SmolLM2-135M-Instruct: the model solves the prompts the builder makes, and at the
last token of blocks.24.hook_resid_post the supervised dictionary approximates and controls it (`eval-task`)."""
from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow

MODEL, HOOK = "smollm2-135m-instruct", "blocks.24.hook_resid_post"


@pytest.fixture(scope="module")
def lm():
    from sae.models import load_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(MODEL, device="cpu")
    torch.set_num_threads(before)


def test_the_model_solves_the_built_task(lm):
    from analysis.tasks import build_ioi
    from analysis.tasks.metrics import logit_diff

    task = build_ioi(lm, 200, seed=0)
    assert len(task.names) == 36 and len(task) == 200
    logits = torch.zeros((len(task), lm.cfg.d_vocab))
    with torch.no_grad():
        for t, tokens in task.tokens.items():
            logits[task.rows[t]] = lm(tokens)[:, -1]
    ld = logit_diff(logits, task.io_tokens, task.s_tokens)
    assert float((ld > 0).float().mean()) >= 0.95
    assert float(ld.mean()) >= 4.0


def test_the_supervised_dictionary_at_layer_24(lm, monkeypatch, capsys, tmp_path):
    from tests.helpers import run_cli

    monkeypatch.setattr("sae.models.load_model", lambda *a, **k: lm)  # the module's model: no second load
    code, out, err = run_cli(monkeypatch, capsys, "eval-task", "ioi", "--layer", "24", "-w", str(tmp_path / "ws"))
    assert code in (0, None), err
    saved = tmp_path / "ws" / "task_evals" / f"ioi-{HOOK}-seed0-edit2.json"
    result = json.loads(saved.read_text())
    sup = result["dictionaries"]["supervised"]
    assert "sufficiency (task features)" in out and str(saved) in out.replace("\n", "")
    assert result["model_check"]["logit_diff_mean_ablated"] < 2.0  # the site carries the answer
    assert 0.8 <= sup["sufficiency"] <= 1.2
    assert sup["logit_diff_removed"] < 1.5
    assert sup["edit_accuracy"] >= 0.6
