"""app/jobs/forms.py: the forms are the CLI's commands (every option, registry choices), and bad values are refused
as the CLI refuses them, in one line, before any job exists."""
import pytest

from app.jobs import forms
from store.errors import InputError


def test_every_option_of_every_command_is_a_field():
    import typer.main

    from app.cli import app

    group = typer.main.get_command(app)
    for name in forms.COMMANDS:
        params = {p.name for p in group.commands[name].params} - forms.SKIPPED
        assert {f.name for f in forms.fields(name)} == params, name


def test_train_offers_every_trainable_architecture_with_the_registrys_help():
    from sae.dictionaries import trainable

    arch = next(f for f in forms.fields("train") if f.name == "arch")
    assert arch.choices == tuple(a.name for a in trainable()) and arch.required
    k = next(f for f in forms.fields("train") if f.name == "k")
    assert all(a.name in k.help for a in trainable() if a.default_k is not None)


def test_values_become_the_clis_arguments():
    assert forms.argv("train", {"arch": "topk", "k": "4", "tokens": " 1024 ", "name": "", "resume": False,
                                "lr": "0.0004", "corpus": "builtin"}) == \
        ["train", "--arch", "topk", "--k", "4", "--tokens", "1024"]
    assert forms.argv("import", {"ref": "saelens:rel/id", "evaluate": False}) == ["import", "saelens:rel/id",
                                                                                   "--no-eval"]
    assert forms.argv("report", {"dictionary": "d", "steering": "1, 2", "heads": True}) == \
        ["report", "d", "--steering", "1", "--steering", "2", "--heads"]
    graph = next(f for f in forms.fields("report") if f.name == "graph")
    assert (graph.kind, graph.option) == ("list", "--graph") and "Attribution graph" in graph.help
    assert forms.argv("report", {"dictionary": "d", "graph": "3, 4"}) == ["report", "d", "--graph", "3", "--graph", "4"]


def test_attribute_offers_the_ablations_and_keeps_the_spaces_of_its_tokens():
    from store.graphs import ABLATIONS

    ablation = next(f for f in forms.fields("attribute") if f.name == "ablation")
    assert ablation.choices == ABLATIONS and ablation.default == "mean"
    assert forms.argv("attribute", {"prompt": " The capital of France is", "target": " Paris", "contrast": "",
                                    "dictionaries": " a, b ", "ablation": "zero", "max_nodes": " 20 "}) == \
        ["attribute", "--prompt", " The capital of France is", "--target", " Paris", "--dictionaries", "a, b",
         "--max-nodes", "20", "--ablation", "zero"]
    assert forms.argv("attribute", {"prompt": "x", "target": " "}) == ["attribute", "--prompt", "x", "--target", " "]


@pytest.mark.parametrize("command, values, says", [
    ("train", {"arch": "topk", "k": "abc"}, "'--k'"),
    ("train", {"arch": "nope"}, "unknown architecture 'nope'"),
    ("train", {"arch": "topk", "k": "-3"}, "--k must be"),
    ("train", {"arch": "topk", "lr": "-1"}, "--lr must be positive"),
    ("train", {"arch": "topk", "name": "../up"}, "dictionary name '../up'"),
    ("train", {"k": "3"}, "Missing option '--arch'"),
    ("train", {"arch": "gba", "option": "target_high=1.5"}, "target_high is a frequency"),
    ("train", {"arch": "gba", "option": "groups=0"}, "groups must be at least 1"),
    ("activations", {"tokens": "12"}, "Missing option '--hook'"),
    ("import", {"ref": "x", "eval_tokens": "0"}, "--eval-tokens must be at least 1"),
    ("analyze", {"tokens": "1e3", "dictionary": "d"}, "'--tokens'"),
    ("analyze", {}, "Missing argument"),
    ("ui", {}, "a job cannot run 'ui'"),
    ("attribute", {"prompt": "x", "target": " ", "max_nodes": "-1"}, "max_nodes and top_n must be positive"),
    ("attribute", {"prompt": "x", "target": " ", "node_share": "1.5"}, "node_share and edge_share must be in (0, 1]"),
    ("attribute", {"prompt": "x", "target": " ", "ablation": "half"}, "ablation must be mean or zero"),
    ("attribute", {"target": " Paris"}, "Missing option '--prompt'"),
])
def test_bad_values_are_one_input_error(command, values, says):
    with pytest.raises(InputError) as caught:
        forms.argv(command, values)
    assert says in str(caught.value) and "\n" not in str(caught.value)
