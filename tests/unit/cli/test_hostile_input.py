"""The CLI on hostile or unusual input: stored text with rich markup prints as it is, the workspace before the
command, an unknown device, arguments that are not UTF-8, emoji prompts."""
import pytest

from store import session
from tests.helpers import error_line, run_cli

HOOK = "blocks.0.hook_resid_post"
MARKUP_PROMPT = "[INST] hi [/INST] [bold]loud :smile:"
DIRECTION = ",".join(["1"] + ["0"] * 63)  # tiny-random's d_model is 64
STEER = ["steer", "--model", "tiny-random", "--raw", "--direction", DIRECTION, "--hook", HOOK, "--max-new-tokens", "3",
         "--greedy"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def marked_ws(ws):
    """A workspace whose store holds a steering run and a corpus with rich markup in their text."""
    from store.corpora import Corpus, save_corpus
    from store.steering import add_run

    with session(ws.db_path) as con:
        add_run(con, "tiny-random", "d[/]", {"prompt": MARKUP_PROMPT, "seed": 0, "interventions": [
            {"mode": "add", "dictionary": "d[/]", "feature": 1, "strength": 2.0}]}, ["a [/INST]"], ["b [red]"],
            {"kl_mean": 0.1, "perplexity_steered": 2.0})
        save_corpus(con, Corpus("c[/b]", "tiny-random", "[italic]source", 8, True, 1, 8), [[1] * 8], ["x" * 8])
    return ws


def test_stored_markup_is_printed_as_it_is(marked_ws, monkeypatch, capsys):
    """A prompt with [/INST] made `steer --list` fail with rich's MarkupError."""
    for args, needles in ((["steer", "--list"], ["[/INST]", "[bold]", ":smile", "d[/]"]),
                          (["corpus", "list"], ["c[/b]", "[italic]"])):
        code, out, err = run_cli(monkeypatch, capsys, *args, "-w", str(marked_ws.root))
        assert code in (0, None) and not err, err
        for needle in needles:
            assert needle in out, (args, needle, out)


def test_generated_and_prompted_markup_prints_as_it_is(ws, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, *STEER, "--prompt", MARKUP_PROMPT, "-w", str(ws.root))
    assert code in (0, None), err
    from store.steering import list_runs

    with session(ws.db_path) as con:
        (run,) = list_runs(con)
    assert run.config["prompt"] == MARKUP_PROMPT
    code, out, err = run_cli(monkeypatch, capsys, "steer", "--list", "-w", str(ws.root))
    assert code in (0, None) and "[/INST]" in out


def test_the_workspace_may_come_before_the_command(marked_ws, tmp_path, monkeypatch, capsys):
    """`sparsescope -w DIR CMD` as in `git -C`; it beats $SPARSESCOPE_WORKSPACE, the command's own -w beats it."""
    monkeypatch.setenv("SPARSESCOPE_WORKSPACE", str(tmp_path / "from-env"))
    code, out, err = run_cli(monkeypatch, capsys, "-w", str(marked_ws.root), "steer", "--list")
    assert code in (0, None) and "[/INST]" in out, err
    code, out, err = run_cli(monkeypatch, capsys, "--workspace", str(marked_ws.root), "corpus", "list")
    assert code in (0, None) and "c[/b]" in out, err
    code, _, err = run_cli(monkeypatch, capsys, "-w", str(marked_ws.root), "steer", "--list",
                           "-w", str(tmp_path / "empty"))
    assert code == 2 and "no store in" in error_line(err) and "empty" in err
    code, _, err = run_cli(monkeypatch, capsys, "steer", "--list")  # neither: the environment's workspace
    assert code == 2 and "from-env" in error_line(err)
    assert not (tmp_path / "from-env").exists() and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("args", [
    STEER + ["--prompt", "hi"],
    ["activations", "--model", "tiny-random", "--hook", HOOK],
    ["head-pattern", "--model", "tiny-random", "--prompt", "hi", "--layer", "0", "--head", "0"],
])
@pytest.mark.parametrize("device, needle", [("gpu", "unknown device 'gpu'"), ("meta", "unknown device 'meta'"),
                                            ("cuda:99", "cuda:99")])
def test_an_unknown_device_is_one_line(ws, monkeypatch, capsys, args, device, needle):
    code, _, err = run_cli(monkeypatch, capsys, *args, "--device", device, "-w", str(ws.root))
    assert code == 2 and needle in error_line(err)


@pytest.mark.parametrize("args", [
    STEER + ["--prompt", "caf\udcff au lait"],  # the byte 0xff of a Latin-1 terminal, as Python keeps it
    ["steer", "--list", "-w", "/tmp/ws-\udce9"],
    ["head-pattern", "--model", "tiny-random", "--prompt", "\ud83d", "--layer", "0", "--head", "0"],
])
def test_an_argument_that_is_not_utf8_is_one_line(ws, monkeypatch, capsys, args):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "is not valid UTF-8 text" in error_line(err)
    assert not ws.db_path.exists()


def test_an_emoji_prompt_steers_and_is_stored_as_typed(ws, monkeypatch, capsys):
    prompt = "Tell me about \U0001f600 and \u00e9t\u00e9 \u2014 \U0001f44d\U0001f3fd"
    code, out, err = run_cli(monkeypatch, capsys, *STEER, "--prompt", prompt, "-w", str(ws.root))
    assert code in (0, None), err
    from store.steering import list_runs

    with session(ws.db_path) as con:
        (run,) = list_runs(con)
    assert run.config["prompt"] == prompt


def test_surrogates_are_refused_by_the_engine_too(tiny_model):
    """What the CLI catches on its arguments, the engine refuses for any caller (the UI, scripts)."""
    from analysis.features.inspector import inspect_prompt
    from analysis.heads.prompt import head_pattern
    from analysis.steering.config import SteerConfig
    from store.errors import InputError

    for call in (lambda: inspect_prompt(tiny_model, HOOK, "ok \udcff", {}),
                 lambda: head_pattern(tiny_model, "ok \ud83d\ude00", 0, 0),
                 lambda: SteerConfig("ok \udcff")):
        with pytest.raises(InputError, match="unpaired surrogate"):
            call()
    assert inspect_prompt(tiny_model, HOOK, "ok \U0001f600", {}).tokens  # emoji: bytes, no error
