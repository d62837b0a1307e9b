"""A stored task evaluation (store/task_evals.py) as people see it, the same on the Evaluations page and in the
reports: the model check in words, a grouped bar chart of the axes for every learned dictionary evaluated alike
(same task, model, site, seed and --edit-features) with the supervised dictionary as the reference and the edit
floor as a baseline, a table of every figure, and the command that reproduces it.

    peers = comparable(evals, picked)          # picked first
    fig = evals_figure(picked, peers); columns, rows = figures_table(picked, peers)
"""
from __future__ import annotations

import plotly.graph_objects as go

from store.task_evals import SUPERVISED, TaskEval

AXES = (  # (label, key, attribute of the interpretability F1 or None)
    ("sufficiency:<br>task features", "sufficiency", None),
    ("sufficiency:<br>reconstruction", "sufficiency_all", None),
    ("necessity", "necessity", None),
    ("IO edit<br>agreement", "edit_accuracy", None),
    ("best F1: IO", "interpretability", "io"),
    ("best F1: S", "interpretability", "s"),
    ("best F1: order", "interpretability", "order"),
)
"""The chart's axes: 1 means as good as the supervised dictionary (sufficiency, necessity) or perfect."""
ROWS = (  # (label, key, format)
    ("sufficiency (reconstruction)", "sufficiency_all", ".2f"),
    ("  logit diff kept", "logit_diff_kept_all", ".2f"),
    ("sufficiency (task features)", "sufficiency", ".2f"),
    ("  logit diff kept", "logit_diff_kept", ".2f"),
    ("necessity (task features removed)", "necessity", ".2f"),
    ("  logit diff after removal", "logit_diff_removed", ".2f"),
    ("IO edit agreement with the patch", "edit_accuracy", ".2f"),
    ("IO edit magnitude (feature weight)", "edit_magnitude", ".2f"),
    ("task features", "task_features", "d"),
)
"""The figures of a dictionary, in the order `eval-task` prints them (the interpretability rows follow)."""
ATTRIBUTES = ("io", "s", "order")
REFERENCE = "supervised dictionary"
FLOOR = "edit floor (an edit that changes nothing)"
FIGURE = "bars: the learned dictionaries evaluated alike; black marks: the supervised dictionary (the reference)"


def _number(value) -> float | int | None:
    """A figure as stored (an int stays one), None for anything not a number."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def axis_value(figures: dict, key: str, attribute: str | None) -> float | None:
    """One axis of a dictionary's figures (None when it lacks it)."""
    value = figures.get(key)
    if attribute is not None:
        value = value.get(attribute) if isinstance(value, dict) else None
        value = value.get("f1") if isinstance(value, dict) else None
    return _number(value)


def comparable(evals: list[TaskEval], picked: TaskEval) -> list[TaskEval]:
    """The picked evaluation, then every other dictionary's evaluation with the same task, model, site, seed and
    --edit-features (one per dictionary): they share the prompts and the supervised dictionary."""
    def same(e: TaskEval) -> bool:
        return (e.dictionary != picked.dictionary and e.run == picked.run
                and e.result.get("model") == picked.result.get("model"))
    return [picked] + [e for e in evals if same(e)]


def edit_floor(result: dict) -> float | None:
    """The IO edit agreement of an edit that changes nothing (absent from results saved before it was measured)."""
    return _number(result["model_check"].get("edit_accuracy_unedited"))


def figure_words(result: dict) -> str:
    """The chart's legend in words (the edit floor only where the result measured it)."""
    floor = "; red mark: the edit floor, the agreement of an edit that changes nothing" if edit_floor(result) \
        is not None else ""
    return FIGURE + floor + "."


def model_check_words(result: dict) -> str:
    """The model's own behaviour on the prompts, one line."""
    c = result["model_check"]

    def f(key: str, spec: str) -> str:
        value = _number(c.get(key))
        return "?" if value is None else format(value, spec)
    words = (f"{result.get('model', '?')} at the last token of {result['hook']}, {result.get('prompts', '?')} prompts: "
             f"IO > S {f('accuracy', '.1%')}, logit diff {f('logit_diff', '.2f')}; mean-ablated "
             f"{f('logit_diff_mean_ablated', '.2f')}; counterfactual patch {f('logit_diff_cf_patched', '.2f')}, "
             f"answers the new IO {f('patch_to_cf_io', '.1%')}")
    floor = edit_floor(result)
    return words + (f" (an edit that changes nothing agrees with it on {floor:.1%})" if floor is not None else "")


def command(e: TaskEval) -> str:
    """The command that reproduces the evaluation."""
    r = e.result
    return (f"sparsescope eval-task {e.task} --dictionary {e.dictionary} --prompts {r.get('prompts', 200)} "
            f"--fit-prompts {r.get('fit_prompts', 1000)} --seed {e.seed} --edit-features {e.edit_features}")


def evals_figure(picked: TaskEval, peers: list[TaskEval]) -> go.Figure:
    """Grouped bars of AXES per learned dictionary, the supervised dictionary's value of each axis as a black
    mark across the group, and the edit floor as a red mark on the IO edit agreement."""
    labels = [label for label, _, _ in AXES]
    fig = go.Figure()
    for e in peers:
        fig.add_bar(name=e.dictionary, x=labels, y=[axis_value(e.learned, k, a) for _, k, a in AXES],
                    hovertemplate="%{x}: %{y:.3f}<extra>" + e.dictionary + "</extra>")
    mark = dict(symbol="line-ew-open", size=60, line=dict(width=3))
    fig.add_scatter(name=REFERENCE, x=labels, y=[axis_value(picked.supervised, k, a) for _, k, a in AXES],
                    mode="markers", marker=dict(color="black", **mark),
                    hovertemplate="%{x}: %{y:.3f}<extra>supervised</extra>")
    floor = edit_floor(picked.result)
    if floor is not None:
        fig.add_scatter(name=FLOOR, x=["IO edit<br>agreement"], y=[floor], mode="markers",
                        marker=dict(color="rgb(220, 38, 38)", **mark),
                        hovertemplate="%{x}: %{y:.3f}<extra>edit floor</extra>")
    fig.update_layout(barmode="group", height=420, xaxis_tickangle=0, margin=dict(l=40, r=20, t=40, b=40),
                      yaxis_title="score",
                      title=f"{picked.task} at {picked.hook} (seed {picked.seed}, {picked.edit_features} edit "
                            "features)", legend=dict(orientation="h", y=-0.15))
    return fig


def figures_table(picked: TaskEval, peers: list[TaskEval]) -> tuple[list[str], list[tuple[str, list]]]:
    """(columns, rows): the supervised dictionary then each learned one; a row per figure (ROWS, then the best
    F1, precision and recall per attribute), numbers or None, rows nobody has left out."""
    columns = [SUPERVISED] + [e.dictionary for e in peers]
    figures = [picked.supervised] + [e.learned for e in peers]
    rows, parent = [], ""
    for label, key, _ in ROWS:
        parent = label if not label.startswith(" ") else parent
        name = label if not label.startswith(" ") else f"{label.strip()} ({parent.split('(')[-1].rstrip(')')})"
        rows.append((name, [_number(f.get(key)) for f in figures]))
    for attr in ATTRIBUTES:
        for part in ("f1", "precision", "recall"):
            cells = []
            for f in figures:
                found = (f.get("interpretability") or {}).get(attr)
                cells.append(_number(found.get(part)) if isinstance(found, dict) else None)
            rows.append((f"best {part} per {attr} value", cells))
    return columns, [(label, cells) for label, cells in rows if any(c is not None for c in cells)]


def row_format(label: str) -> str:
    return "d" if label == "task features" else ".3f"
