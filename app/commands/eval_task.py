"""`sparsescope eval-task`: a dictionary against the supervised dictionary of a task (approximation, control,
interpretability), printed as a table and saved as JSON."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import WorkspaceOpt, app, console, quiet, workspace


@app.command(name="eval-task")
def eval_task_cmd(
    task: Annotated[str, typer.Argument(help="The task: ioi.")],
    dictionary: Annotated[Optional[str], typer.Option(help="Workspace dictionary, evaluated at its own site "
                                                           "beside the supervised dictionary.",
                                                      show_default=False)] = None,
    layer: Annotated[Optional[int], typer.Option(help="Without --dictionary: the site blocks.LAYER.hook_resid_post.",
                                                 show_default=False)] = None,
    hook: Annotated[Optional[str], typer.Option(help="Without --dictionary: the site's hook.",
                                                show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Model without --dictionary (default: the embedded one).",
                                                 show_default=False)] = None,
    prompts: Annotated[int, typer.Option(help="Evaluation prompts (every figure is measured on them).")] = 200,
    fit_prompts: Annotated[int, typer.Option("--fit-prompts", help="Other prompts for the mean activation, the "
                                                                   "supervised codes and the F1 rankings.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the prompts (the fit prompts take seed + 1).")] = 0,
    edit_features: Annotated[int, typer.Option("--edit-features", help="Features per attribute value: the task "
                                                                       "features, and the swap of an edit.")] = 2,
    ws: WorkspaceOpt = None,
):
    """Evaluate a dictionary on a task with known attributes, at the last token of its site: sufficiency and
    necessity (logit difference IO - S kept by the reconstruction from the task features, or lost when they are
    removed, normalised against mean ablation), control (an IO edit against the counterfactual patch) and
    interpretability (precision/recall/F1 of the best feature per attribute value), next to the supervised
    dictionary built from conditional means. Saves DICTIONARY_FOLDER/task_evals/TASK-HOOK-seedS-editN.json.
    """
    from analysis.tasks import TaskEvalRequest, check_task, run_task_eval

    request = TaskEvalRequest(check_task(task), dictionary, layer, hook, model, prompts, fit_prompts, seed,
                              edit_features)
    result, path = run_task_eval(workspace(ws), request, progress=not quiet())
    _print(result)
    console.print(f"saved {path}", markup=False)


def _print(result: dict) -> None:
    from analysis.task_view import ROWS

    check = result["model_check"]
    console.print(Text.assemble((f"{result['task']}", "bold"), f" on {result['model']} at the last token of "
                                f"{result['hook']}: {result['prompts']} prompts ({result['names']} names, "
                                f"{result['templates']} templates), fit on {result['fit_prompts']}"))
    console.print(f"model: IO > S {check['accuracy']:.1%}, IO top-1 {check['top1']:.1%}, logit diff "
                  f"{check['logit_diff']:.2f}; mean-ablated {check['logit_diff_mean_ablated']:.2f}; counterfactual "
                  f"patch {check['logit_diff_cf_patched']:.2f}, answers the new IO {check['patch_to_cf_io']:.1%} "
                  f"(an edit that changes nothing agrees with it on {check['edit_accuracy_unedited']:.1%})",
                  markup=False)
    names = list(result["dictionaries"])
    table = Table("metric", *names)
    for label, key, fmt in ROWS:
        cells = [result["dictionaries"][n].get(key) for n in names]
        if any(c is not None for c in cells):
            table.add_row(label, *("-" if c is None else format(c, fmt) for c in cells))
    for attr in ("io", "s", "order"):
        cells = [result["dictionaries"][n].get("interpretability", {}).get(attr) for n in names]
        if any(cells):
            table.add_row(f"best F1 per {attr} value (P / R)", *("-" if c is None else
                                                              f"{c['f1']:.2f} ({c['precision']:.2f} / "
                                                              f"{c['recall']:.2f})" for c in cells))
    console.print(table)
