"""`sparsescope steer`: steer a generation with dictionary features or a raw direction, side by side with the
default text, measured and stored (re-run a stored run with --rerun ID, list them with --list)."""
from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, existing_workspace, quiet, workspace


def _input_error(message: str):
    from store.errors import InputError

    return InputError(message)


def _number(name: str, text: str | None) -> float | None:
    """A finite float from an option's text (typer's own parsing would print a usage box, not one line)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _input_error(f"{name} must be a number (got {text!r})") from None
    if not math.isfinite(value):
        raise _input_error(f"{name} must be a finite number (got {text!r})")
    return value


def _feature_ref(text: str) -> tuple[str, int]:
    name, _, feature = text.rpartition(":")
    if not name or not feature.strip().lstrip("-").isdigit():
        raise _input_error(f"a feature is DICT:ID, e.g. topk-blocks.6.hook_resid_post-4608:123 (got {text!r})")
    return name, int(feature)


def _direction(text: str) -> tuple[float, ...]:
    """A raw direction from a .npy file, or from comma-separated numbers."""
    path = Path(text).expanduser()
    if path.suffix == ".npy":
        import numpy as np

        if not path.is_file():
            raise _input_error(f"no direction file {path}")
        return tuple(float(v) for v in np.load(path).reshape(-1))
    return tuple(_number("--direction", part) for part in text.split(","))


def _model_name(con, explicit: str | None, features: list[str], trigger: str | None) -> str:
    from sae.models import DEFAULT_MODEL
    from store.dictionaries import require_dictionary

    if explicit:
        return explicit
    names = [_feature_ref(f)[0] for f in features] + ([_feature_ref(trigger)[0]] if trigger else [])
    return (require_dictionary(con, names[0]).model or DEFAULT_MODEL) if names else DEFAULT_MODEL


def _config(opts: dict, model: str, interventions):
    """A SteerConfig of `interventions` with the generation settings of the options."""
    from analysis.steering.lab import SteerConfig

    return SteerConfig(prompt=opts["prompt"] or "", interventions=tuple(interventions), model=model,
                       chat=not opts["raw"], max_new_tokens=opts["max_new_tokens"], samples=opts["samples"],
                       seed=opts["seed"], temperature=0.0 if opts["greedy"] else _number("--temperature", opts[
                           "temperature"]), top_p=_number("--top-p", opts["top_p"]))


def _build_config(opts: dict, model: str):
    from analysis.steering.lab import Intervention, Trigger

    trigger = None
    if opts["trigger"]:
        name, feature = _feature_ref(opts["trigger"])
        trigger = Trigger(name, feature, _number("--threshold", opts["threshold"]) or 0.0)
    common = dict(mode=opts["mode"], strength=_number("--strength", opts["strength"]),
                  value=_number("--value", opts["value"]), positions=opts["positions"], trigger=trigger)
    interventions = [Intervention(dictionary=n, feature=f, **common) for n, f in map(_feature_ref, opts["feature"])]
    if opts["direction"]:
        interventions.append(Intervention(direction=_direction(opts["direction"]), hook=opts["hook"], **common))
    if not interventions:
        raise _input_error("nothing to steer with: give --feature DICT:ID (or --direction with --hook)")
    return _config(opts, model, interventions)


def _plan(space, opts: dict):
    """(config, pinned numbers, dictionaries) from the options or a stored run; reads the store only."""
    from analysis.steering.runs import load_dictionaries, load_run
    from store import session
    from store.errors import InputError

    with session(space.db_path) as con:
        if opts["rerun"] is not None:
            config, numbers = load_run(con, opts["rerun"])
        else:
            try:
                config = _build_config(opts, _model_name(con, opts["model"], opts["feature"], opts["trigger"]))
            except InputError:
                raise
            except ValueError as exc:  # a config's validation
                raise _input_error(str(exc)) from None
            numbers = None
        dictionaries = load_dictionaries(con, config, space, opts["device"])
    return config, numbers, dictionaries


def _texts_table(default: list[str], steered: list[str]) -> Table:
    table = Table("#", "default", "steered", show_lines=True)
    for i, (d, s) in enumerate(zip(default, steered)):
        table.add_row(str(i), Text(d), Text(s))  # model text: never read as markup
    return table


def _measures_lines(result) -> list[str]:
    m = result.measures
    lines = [f"KL(steered || default) per token: mean {m['kl_mean']:.4f}, max over positions "
             f"{max(m['kl_per_position'], default=0.0):.4f}",
             f"perplexity under the unsteered model: default {m.get('perplexity_default', float('nan')):.2f}, "
             f"steered {m['perplexity_steered']:.2f}"]
    for t in m["targets"]:
        d, s = t.get("default", {}), t["steered"]
        lines.append(f"{t['label']} on the continuation: mean {d.get('mean', float('nan')):.4g} -> {s['mean']:.4g}, "
                     f"max {d.get('max', float('nan')):.4g} -> {s['max']:.4g}, fired {d.get('fired', float('nan')):.0%}"
                     f" -> {s['fired']:.0%}")
    return lines + [f"note: {n}" for n in result.notes]


def _run_one(space, model, config, numbers, dictionaries):
    from analysis.steering.lab import steer
    from analysis.steering.runs import record_run
    from store import session

    status = nullcontext() if quiet() else console.status("generating default and steered text...")
    with status:
        result = steer(model, config, dictionaries, numbers)
    with session(space.db_path) as con:
        run_id = record_run(con, result)
    console.print(_texts_table(result.default_texts, result.steered_texts))
    console.print("\n".join(_measures_lines(result)), markup=False, highlight=False)
    console.print(f"stored as steering run {run_id} ({result.seconds:.1f} s); re-run it with "
                  f"`sparsescope steer --rerun {run_id}`", markup=False, highlight=False)
    return result


def _run_sweep(space, model, config, dictionaries, strengths: list[float]) -> None:
    from analysis.steering.lab import sweep
    from analysis.steering.runs import record_run
    from store import session

    points = sweep(model, config, dictionaries, strengths)
    with session(space.db_path) as con:
        ids = [record_run(con, p.result) for p in points]
    table = Table("strength", "target mean", "target max", "perplexity", "KL mean", "run", "steered (sample 0)")
    for point, run_id in zip(points, ids):
        table.add_row(f"{point.strength:g}", f"{point.target_mean:.4g}", f"{point.target_max:.4g}",
                      f"{point.perplexity:.2f}", f"{point.kl_mean:.4f}", str(run_id), point.result.steered_texts[0])
    console.print(f"default (sample 0): {points[0].result.default_texts[0]}", markup=False, highlight=False)
    console.print(table)


def _list_runs(space) -> None:
    from store import session
    from store.steering import list_runs

    with session(space.db_path) as con:
        runs = list_runs(con)
    table = Table("id", "created", "model", "dictionary", "prompt", "interventions", "KL mean", "ppl")
    for r in runs:
        ivs = ", ".join(f"{i['mode']} {i.get('dictionary') or 'direction'}:{i.get('feature', '')} x{i['strength']:g}"
                        for i in r.config.get("interventions", []))
        table.add_row(str(r.id), f"{r.created:%Y-%m-%d %H:%M}", r.model, r.dictionary or "-",
                      r.config.get("prompt", "")[:40], ivs, f"{r.measures.get('kl_mean', float('nan')):.4f}",
                      f"{r.measures.get('perplexity_steered', float('nan')):.2f}")
    console.print(table if runs else "no steering runs yet")


def _plan_described(space, opts: dict):
    """(proposal, config, dictionaries) of --describe; reads the store only."""
    from analysis.steering.describe import interventions, propose
    from analysis.steering.runs import load_dictionaries
    from store import session
    from store.errors import InputError

    with session(space.db_path) as con:
        proposal = propose(con, opts["describe"], opts["dictionary"], opts["top"],
                           strength=_number("--strength", opts["strength"]))
        try:
            specs = interventions(proposal, opts["mode"], opts["positions"])
            config = _config(opts, _model_name(con, opts["model"], [proposal.features[0].ref], None), specs)
        except InputError:
            raise
        except ValueError as exc:  # a config's validation
            raise _input_error(str(exc)) from None
        dictionaries = load_dictionaries(con, config, space, opts["device"])
    return proposal, config, dictionaries


def _proposal_lines(proposal) -> list[Text]:
    lines = [Text.assemble(("steering toward ", "bold"), (proposal.description, "bold"),
                           f" (searched: {', '.join(proposal.words)}; {len(proposal.features)} feature(s) of "
                           f"{proposal.dictionary})")]
    for p in proposal.features:
        lines.append(Text.assemble((p.ref, "bold"), f": strength {p.strength:.3g} x max activation "
                                                    f"{p.max_act:.4g} = {p.amount:.4g} (match {p.match:.2f})"))
        if p.label:
            lines.append(Text.assemble("  label: ", (p.label, "italic")))
        if p.explanation:
            lines.append(Text(f"  explanation ({p.explainer}): {p.explanation}"))
    return lines


def _effect_line(effect) -> Text:
    verdict = ("description met", "green") if effect.met else ("description not met", "red")
    return Text.assemble(verdict, f": the selected features' mean activation on the continuation "
                                  f"{effect.default_mean:.4g} unsteered -> {effect.steered_mean:.4g} steered")


def _run_described(space, opts: dict) -> None:
    from analysis.steering.describe import described_effect
    from sae.models import load_model

    proposal, config, dictionaries = _plan_described(space, opts)
    for line in _proposal_lines(proposal):
        console.print(line, soft_wrap=True)
    lm = load_model(config.model, device=opts["device"])
    result = _run_one(space, lm, config, None, dictionaries)
    console.print(_effect_line(described_effect(result, proposal)), soft_wrap=True)


def _describe_conflicts(opts: dict) -> None:
    """--describe chooses the features itself; --dictionary and --top only go with it."""
    if opts["describe"] is None:
        if opts["dictionary"] is not None or opts["top"] is not None:
            raise _input_error("--dictionary and --top go with --describe")
        return
    taken = [name for name, given in (("--feature", opts["feature"]), ("--direction", opts["direction"]),
                                      ("--trigger", opts["trigger"]), ("--sweep", opts["sweep"]),
                                      ("--rerun", opts["rerun"] is not None), ("--list", opts["list_"])) if given]
    if taken:
        raise _input_error(f"--describe picks the features itself; leave out {', '.join(taken)}")


@app.command(name="steer")
def steer_cmd(
    prompt: Annotated[Optional[str], typer.Option(help="Prompt (wrapped in the chat template unless --raw).")] = None,
    feature: Annotated[Optional[list[str]], typer.Option(help="DICT:ID to steer with (repeat for several).")] = None,
    mode: Annotated[str, typer.Option(help="add, clamp, ablate, orthogonal (scale the residual's component along "
                                           "the direction by --strength) or cap (cap that component at --value).")
                    ] = "add",
    strength: Annotated[str, typer.Option(help="add: x the feature's max activation; clamp: value = strength x "
                                               "max activation unless --value; orthogonal: the factor on the "
                                               "component along the direction.")] = "4",
    value: Annotated[Optional[str], typer.Option(help="clamp: the feature's value (raw units); cap: the most the "
                                                      "projection on the unit direction may be (required).")] = None,
    positions: Annotated[str, typer.Option(help="all, prompt or generated.")] = "all",
    trigger: Annotated[Optional[str], typer.Option(help="DICT:ID: steer only where this feature fires.")] = None,
    threshold: Annotated[str, typer.Option(help="Trigger threshold (raw activation).")] = "0",
    direction: Annotated[Optional[str], typer.Option(help="Raw direction: a .npy file or comma-separated "
                                                          "numbers (with --hook).")] = None,
    hook: Annotated[Optional[str], typer.Option(help="Hook of --direction, e.g. blocks.6.hook_resid_post.")] = None,
    samples: Annotated[int, typer.Option(help="Samples per arm, generated as one batch.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling seed (both arms draw the same numbers).")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate.")] = 40,
    temperature: Annotated[str, typer.Option(help="Sampling temperature (0: greedy).")] = "0.7",
    top_p: Annotated[str, typer.Option("--top-p", help="Nucleus sampling: draw from the most likely tokens "
                                                       "holding this much probability, in (0, 1]; 1 is the "
                                                       "whole distribution.")] = "0.9",
    greedy: Annotated[bool, typer.Option("--greedy", help="Greedy decoding (temperature 0).")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Raw completion, no chat template.")] = False,
    model: Annotated[Optional[str], typer.Option(help="Model (default: the dictionary's).")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="Comma-separated strengths, e.g. 0,2,4,8.")] = None,
    rerun: Annotated[Optional[int], typer.Option(help="Re-run stored run ID with its seed.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the stored steering runs.")] = False,
    describe: Annotated[Optional[str], typer.Option(help="Steer by words: the features whose explanations and "
                                                         "labels best match this text, at --strength x their max "
                                                         "activation scaled by how well each matched.",
                                                    show_default=False)] = None,
    dictionary: Annotated[Optional[str], typer.Option(help="--describe: look in this dictionary only (default: "
                                                           "the best match's).", show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(help="--describe: how many features to steer with (default 3).",
                                               show_default=False)] = None,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Generate default and steered text side by side, print the measures, store the run."""
    _describe_conflicts(dict(locals()))
    # a stored run or a dictionary's feature can only come from an existing store: do not create one to look
    looks_up = list_ or rerun is not None or feature or trigger or describe is not None
    space = existing_workspace(ws) if looks_up else workspace(ws)
    if list_:
        return _list_runs(space)
    strengths = [_number("--sweep", s) for s in sweep.split(",")] if sweep else None
    from sae.device import pick_device
    from sae.models import load_model

    opts = dict(locals(), feature=feature or [], device=str(pick_device(device)))
    if describe is not None:
        return _run_described(space, opts)
    config, numbers, dictionaries = _plan(space, opts)
    lm = load_model(config.model, device=opts["device"])
    if strengths:
        return _run_sweep(space, lm, config, dictionaries, strengths)
    _run_one(space, lm, config, numbers, dictionaries)
