"""Hand-written task evaluations in the layout `sparsescope eval-task` saves (analysis/tasks/evaluate.py), for the
tests of the loader, the Evaluations page and the reports' section."""
from __future__ import annotations

import json
from pathlib import Path

SUPERVISED = {"sufficiency": 1.08, "logit_diff_kept": 5.5, "necessity": 1.05, "logit_diff_removed": 0.07,
              "edit_accuracy": 0.955, "edit_magnitude": 0.69, "task_features": 74}


def learned_figures(sufficiency: float = 0.25, necessity: float = 0.125, edit_accuracy: float = 0.375,
                    f1: float = 0.5) -> dict:
    """A learned dictionary's figures (sufficiency_all = 2 x sufficiency; F1 per attribute f1, f1 / 2, f1 / 4)."""
    return {"sufficiency": sufficiency, "logit_diff_kept": 1.25, "necessity": necessity, "logit_diff_removed": 4.5,
            "sufficiency_all": 2 * sufficiency, "logit_diff_kept_all": 2.5, "necessity_all": 0.2,
            "logit_diff_removed_all": 4.0, "edit_accuracy": edit_accuracy, "edit_magnitude": 0.05,
            "task_features": 125,
            "interpretability": {attr: {"f1": f1 / 2 ** i, "precision": 0.75, "recall": 0.625}
                                 for i, attr in enumerate(("io", "s", "order"))}}


def task_eval_result(dictionary: str, hook: str = "blocks.0.hook_resid_post", seed: int = 0, edit_features: int = 2,
                     unedited: float | None = 0.0625, **figures) -> dict:
    """A result of `eval-task ioi --dictionary DICTIONARY`; `unedited` None leaves out the edit floor (as results
    saved before it was measured)."""
    check = {"accuracy": 0.995, "top1": 0.99, "logit_diff": 5.14, "logit_diff_mean_ablated": 0.31,
             "logit_diff_cf_patched": -0.84, "patch_to_cf_io": 0.82}
    if unedited is not None:
        check["edit_accuracy_unedited"] = unedited
    return {"task": "ioi", "model": "tiny-random", "hook": hook, "prompts": 40, "fit_prompts": 80, "seed": seed,
            "edit_features": edit_features, "names": 8, "templates": 6, "model_check": check,
            "dictionaries": {"supervised": dict(SUPERVISED), dictionary: learned_figures(**figures)},
            "seconds": 1.0, "arch": "topk"}


def save_task_eval(folder: Path, result: dict) -> Path:
    """Write the result where `eval-task` does: FOLDER/task_evals/TASK-HOOK-seedS-editN.json."""
    out = Path(folder) / "task_evals"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result['task']}-{result['hook']}-seed{result['seed']}-edit{result['edit_features']}.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    return path
