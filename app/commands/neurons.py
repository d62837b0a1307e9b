"""`sparsescope neurons`: an MLP layer's neurons as a dictionary (add), and concept neurons found by decoding
every output neuron through the final norm and the unembedding (find)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.commands.common import DeviceOpt, WorkspaceOpt, app, console, workspace

neurons_app = typer.Typer(help="MLP neurons as features: add a layer's neuron dictionary, find concept neurons.",
                          no_args_is_help=True)
app.add_typer(neurons_app, name="neurons")

ModelOpt = Annotated[Optional[str], typer.Option(help="Model (default: the embedded one).", show_default=False)]
SHOWN_TOKENS = 10
"""Decoded tokens printed per neuron."""


@neurons_app.command("add")
def add_cmd(
    layer: Annotated[int, typer.Option(help="MLP layer whose neurons become the dictionary's features.")],
    model: ModelOpt = None,
    name: Annotated[Optional[str], typer.Option(help="Dictionary name (default neurons-L<layer>).",
                                                show_default=False)] = None,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Add the neuron dictionary of one MLP layer (no training): feature i is neuron i at blocks.L.mlp.hook_post.

    Then `sparsescope analyze NAME` fills its dashboards; steering clamps a neuron like any feature.
    """
    from analysis.features.neurons import NeuronsRequest, add_neurons

    row = add_neurons(workspace(ws), NeuronsRequest(layer=layer, model=model, name=name, device=device))
    console.print(Text.assemble("dictionary ", (row.name, "bold"), f" (neurons, {row.model}, {row.hook}, "
                                f"{row.d_sae} neurons) saved to {row.path}"))
    console.print(f"next: sparsescope analyze {row.name}; then /feature?dict={row.name}&feature=N")


@neurons_app.command("find")
def find_cmd(
    concept: Annotated[str, typer.Option(help="Concept words, e.g. 'dog cat' (matched case-insensitively, "
                                              "plural 's' allowed).", show_default=False)],
    layer: Annotated[Optional[int], typer.Option(help="One MLP layer.", show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(help="A range of layers A-B (inclusive), e.g. 20-29.",
                                                  show_default=False)] = None,
    top: Annotated[int, typer.Option(help="Neurons listed.")] = 10,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    ws: WorkspaceOpt = None,
):
    """Rank the output neurons of the layers by how much their decoded tokens concentrate on CONCEPT.

    Each neuron's output weights are read through the final norm's weight and the unembedding, both signs
    apart (+: what it promotes when positive, -: when negative); its score is the share of its top 20 decoded
    tokens that match a concept word (ties: their softmax mass among those 20).
    """
    from analysis.features.neurons import concept_words, find_neurons, parse_layers
    from sae.models import DEFAULT_MODEL, load_model
    from store.errors import InputError

    if (layer is None) == (layers is None):
        raise InputError("give one of --layer L or --layers A-B")
    chosen = [layer] if layer is not None else parse_layers(layers)
    concept_words(concept)  # refused before the model loads
    lm = load_model(model or DEFAULT_MODEL, device=device)
    result = find_neurons(lm, chosen, concept, top=top)
    added = _neuron_dictionaries(ws, lm.cfg.model_name)
    console.print(f"decoded {result.neurons:,} neurons of {len(chosen)} layer(s), both signs, in "
                  f"{result.seconds:.1f} s")
    if not result.hits:
        console.print(f"no neuron of layers {chosen[0]}..{chosen[-1]} has a decoded token matching {concept!r}")
        return
    table = Table("layer", "neuron", "sign", "score", "top decoded tokens", "dashboard")
    for hit in result.hits:
        tokens = ", ".join(repr(t) for t in hit.tokens[:SHOWN_TOKENS])
        table.add_row(str(hit.layer), str(hit.neuron), hit.sign, f"{hit.score:.2f}", Text(tokens),
                      Text(_dashboard(added, hit.layer, hit.neuron, model)))
    console.print(table)


def _neuron_dictionaries(ws: str | None, model: str) -> dict[int, str]:
    """Layer -> name of the workspace's neuron dictionaries of `model` (none when there is no store yet)."""
    space = workspace(ws, create=False)
    if not space.db_path.exists():
        return {}
    from store import session
    from store.dictionaries import list_dictionaries

    with session(space.db_path, read_only=True) as con:
        rows = list_dictionaries(con)
    found = {}
    for row in rows:
        if row.arch == "neurons" and row.model == model and row.hook.endswith(".mlp.hook_post"):
            found.setdefault(int(row.hook.split(".")[1]), row.name)
    return found


def _dashboard(added: dict[int, str], layer: int, neuron: int, model: str | None) -> str:
    """The neuron's feature page, or the command that adds its layer's dictionary first."""
    if layer in added:
        return f"/feature?dict={added[layer]}&feature={neuron}"
    add = f"sparsescope neurons add --layer {layer}{f' --model {model}' if model else ''}"
    return f"{add}, then /feature?dict=neurons-L{layer}&feature={neuron}"
