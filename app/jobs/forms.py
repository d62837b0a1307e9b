"""The form of every command a job can run, read from the CLI itself: one field per option or argument.

Nothing here lists a command's options a second time: `fields` reads them (name, type, default, help) from the
typer command, choices and the help of registry-driven options come from the registries the CLI reads
(`--arch` from sae/dictionaries/registry.py), and `argv` checks a form's values by parsing them with the CLI's
own parser, then with the cheap checks the command itself starts with. What only the running command can check
(a missing corpus, a hook the model lacks) is its job's outcome: the CLI's one `error:` line.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from store.errors import InputError

COMMANDS = ("activations", "train", "analyze", "heads", "import", "report", "export-neuronpedia", "explain",
            "attribute")
"""What the Jobs page starts, in the order it offers them."""
SKIPPED = {"ws"}
"""Options a job does not take from its form (the workspace is the UI's)."""
VERBATIM = {("attribute", "prompt"), ("attribute", "target"), ("attribute", "contrast")}
"""Text options whose leading and trailing spaces matter (tokens start with a space): never stripped."""
Kind = Literal["text", "int", "float", "flag", "list"]


@dataclass(frozen=True)
class Field:
    name: str
    """The command's parameter name (the key of a form's values)."""
    label: str
    """--option, or the argument's name in capitals."""
    kind: Kind
    default: Any
    required: bool
    help: str
    choices: tuple[str, ...] = ()
    """Where the CLI reads its choices from a registry (e.g. --arch)."""
    option: str | None = None
    """The flag to pass (None: a positional argument)."""
    off_option: str | None = None
    """The flag that turns a default-on boolean off (--no-eval)."""
    verbatim: bool = False
    """Text passed as typed, spaces included (a token such as ' Paris'); only an empty field is not given."""


def _architectures() -> tuple[str, ...]:
    from sae.dictionaries import trainable

    return tuple(arch.name for arch in trainable())


def _explainers() -> tuple[str, ...]:
    from analysis.explain.registry import EXPLAINERS

    return tuple(EXPLAINERS)


def _formats() -> tuple[str, ...]:
    from analysis.reports import FORMATS

    return tuple(FORMATS)


def _ablations() -> tuple[str, ...]:
    from store.graphs import ABLATIONS

    return ABLATIONS


CHOICES: dict[tuple[str, str], Callable[[], tuple[str, ...]]] = {
    ("train", "arch"): _architectures, ("explain", "explainer"): _explainers, ("report", "fmt"): _formats,
    ("attribute", "ablation"): _ablations}
"""Options whose values come from a registry (the CLI checks them against the same one)."""


@functools.cache
def _group():
    import typer.main

    from app.cli import app

    return typer.main.get_command(app)


def command(name: str):
    if name not in COMMANDS:
        raise InputError(f"a job cannot run {name!r} (choose from {', '.join(COMMANDS)})")
    return _group().commands[name]


@functools.cache
def _registry_help(name: str) -> dict[str, str]:
    """The help the CLI fills in from a registry when it shows `--help` (train, explain)."""
    if name == "train":
        from app.commands.dicts import registry_help
    elif name == "explain":
        from app.commands.explain import registry_help
    else:
        return {}
    return registry_help()


def _kind(param) -> Kind:
    annotation = param.type_descriptor.annotation
    if annotation is bool:
        return "flag"
    if annotation in (int, float):
        return "int" if annotation is int else "float"
    if getattr(annotation, "__origin__", None) in (list, tuple):
        return "list"
    return "text"


def fields(name: str) -> list[Field]:
    """The form of command `name`, in the CLI's order."""
    helps = _registry_help(name)
    out = []
    for param in command(name).params:
        if param.name in SKIPPED:
            continue
        is_option = param.param_type_name == "option"
        choices = CHOICES.get((name, param.name))
        out.append(Field(param.name, param.opts[0] if is_option else param.name.upper(), _kind(param),
                         param.default, bool(param.required), helps.get(param.name, getattr(param, "help", "")
                                                                           or ""),
                         choices() if choices else (), param.opts[0] if is_option else None,
                         param.secondary_opts[0] if is_option and param.secondary_opts else None,
                         (name, param.name) in VERBATIM))
    return out


def _args(form: list[Field], values: Mapping[str, Any]) -> list[str]:
    """The command-line arguments of a form's values: text as typed ("" = not given), flags as given."""
    args: list[str] = []
    for field in form:
        value = values.get(field.name)
        if field.kind == "flag":
            if value is None or bool(value) == bool(field.default):
                continue
            flag = field.option if value else field.off_option
            if flag is None:
                raise InputError(f"{field.label} cannot be turned off")
            args.append(flag)
            continue
        text = str(value if value is not None else "")
        if field.verbatim:
            if text:
                args += [field.option, text] if field.option is not None else [text]
            continue
        text = text.strip()
        if field.choices and text == str(field.default):
            continue  # a choice left at the CLI's default: the command line stays what the user changed
        if field.kind != "list" and field.default is not None and text == str(field.default):
            continue
        items = [v.strip() for v in text.split(",")] if field.kind == "list" else [text]
        for item in (i for i in items if i):
            if field.option is None:
                args.append(item)
            else:
                args += [field.option, item]
    return args


def argv(name: str, values: Mapping[str, Any]) -> list[str]:
    """`[name, *args]` for a form's values, checked as the CLI checks them; InputError (one line) otherwise."""
    from typer._click.exceptions import ClickException

    args = _args(fields(name), values)
    try:
        ctx = command(name).make_context(name, list(args))
    except ClickException as exc:
        raise InputError(exc.format_message().replace("\n", " ")) from None
    CHECKS.get(name, lambda params: None)(ctx.params)
    return [name, *args]


def _check_train(params: dict) -> None:
    from analysis.training import TrainRequest, check_train_options
    from store.dictionaries import check_name

    if params.get("name"):
        check_name(params["name"])
    request = {k: v for k, v in params.items() if k in TrainRequest.__dataclass_fields__}
    request["options"] = tuple(params.get("option") or ())  # --option NAME=VALUE, repeated
    check_train_options(TrainRequest(**request))


def _check_import(params: dict) -> None:
    from analysis.byod import ImportRequest

    ImportRequest(params["ref"], name=params.get("name"), evaluate=params["evaluate"], corpus=params["corpus"],
                  tokens=params["eval_tokens"], device=params.get("device")).check()


def _check_attribute(params: dict) -> None:
    from analysis.attribution import AttributionConfig

    try:
        AttributionConfig(max_nodes=params["max_nodes"], node_share=params["node_share"],
                          edge_share=params["edge_share"], ablation=params["ablation"])
    except ValueError as exc:
        raise InputError(str(exc)) from None


CHECKS: dict[str, Callable[[dict], None]] = {"train": _check_train, "import": _check_import,
                                             "attribute": _check_attribute}
"""The cheap checks a command makes before its work starts, run before its job does."""
