"""`sparsescope eval-task`: resolve the site from a dictionary or a layer/hook, evaluate, save the JSON result."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError
from store.task_evals import RESULTS_FOLDER
from store.workspace import Workspace

TASKS = {"ioi": "indirect object identification: templated prompts, attributes IO name, S name, order ABB/BAB"}
"""Every task `eval-task` takes, with what it is."""
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class TaskEvalRequest:
    task: str
    dictionary: str | None = None
    """A workspace dictionary: evaluated at its own site, beside the supervised dictionary."""
    layer: int | None = None
    """blocks.LAYER.hook_resid_post, when no --hook is given."""
    hook: str | None = None
    model: str | None = None
    """The model without a dictionary (default: the embedded one); with one it must be the dictionary's."""
    prompts: int = 200
    fit_prompts: int = 1000
    seed: int = 0
    edit_features: int = 2


def check_task(name: str) -> str:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    return name


def resolve_site(request: TaskEvalRequest, row=None) -> tuple[str, str]:
    """(model, hook) of the evaluation: the dictionary's, else --hook / --layer on --model. InputError for a
    hook or layer that disagrees with the dictionary's, or neither a dictionary nor a site."""
    hook = request.hook or (f"blocks.{request.layer}.hook_resid_post" if request.layer is not None else None)
    if request.layer is not None and request.layer < 0:
        raise InputError(f"--layer must be >= 0 (got {request.layer})")
    if row is None:
        if hook is None:
            raise InputError("give --dictionary NAME, or --layer / --hook for the supervised dictionary alone")
        return request.model or DEFAULT_MODEL, hook
    if hook is not None and hook != row.hook:
        raise InputError(f"dictionary {row.name!r} reads {row.hook}, not {hook} (leave out --layer/--hook)")
    if request.model is not None and request.model != row.model:
        raise InputError(f"dictionary {row.name!r} was trained on {row.model}, not {request.model}")
    return row.model, row.hook


def run_task_eval(ws: Workspace, request: TaskEvalRequest, lm=None, progress: bool = False) -> tuple[dict, Path]:
    """Evaluate and save; (result, path of its JSON). Every input is checked before the model loads."""
    from analysis.dictionaries import dictionary_folder, open_dictionary
    from analysis.tasks.evaluate import check_counts, evaluate_site
    from analysis.tasks.site import check_site
    from sae.models import load_model

    check_task(request.task)
    check_counts(request.prompts, request.fit_prompts, request.edit_features)
    row, sae = open_dictionary(ws, request.dictionary, device="cpu") if request.dictionary else (None, None)
    model_name, hook = resolve_site(request, row)
    lm = lm if lm is not None else load_model(model_name, device="cpu")
    check_site(lm, hook)  # a layer out of range or a hook without positions: before any prompt runs
    t0 = time.perf_counter()
    result = evaluate_site(lm, hook, sae, request.dictionary, prompts=request.prompts,
                           fit_prompts=request.fit_prompts, seed=request.seed,
                           edit_features=request.edit_features, progress=progress)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["arch"] = row.arch if row is not None else None
    folder = (dictionary_folder(ws, row) if row is not None else ws.root) / RESULTS_FOLDER
    return result, save_result(folder, result)


def save_result(folder: Path, result: dict) -> Path:
    """Write result to FOLDER/TASK-HOOK-seedS-editN.json atomically (a rerun replaces it)."""
    from store.paths import write_durable

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{result['task']}-{result['hook']}-seed{result['seed']}-edit{result['edit_features']}.json"
    write_durable(out, json.dumps(result, indent=1))
    return out
