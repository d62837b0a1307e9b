"""`sparsescope import` evaluates a dictionary on the workspace corpus for its model and hook, stores the metrics,
and `analyze` works on it at once; a model or hook the workspace cannot provide is one line, exit 2, nothing
written."""
import pytest
import torch

from store import connect
from store.dictionaries import get_metrics, list_dictionaries
from tests.factories import TINY_HOOK, TINY_MODEL, saved_dictionary
from tests.helpers import error_line, run_cli

CTX = 32


@pytest.fixture
def small_ws(monkeypatch, capsys, tmp_path):
    """A workspace with a small tiny-random corpus `small` (40 contexts of 32 tokens)."""
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the cat sat on the mat, and the dog ran to the park." * 2
                                for i in range(40)))
    ws = tmp_path / "ws"
    code, _, err = run_cli(monkeypatch, capsys, "corpus", "add", "small", "--source", str(text), "--model",
                           TINY_MODEL, "--ctx", str(CTX), "-w", str(ws))
    assert code in (0, None), err
    return ws


def _state(ws):
    con = connect(ws / "sparsescope.duckdb", read_only=True)
    try:
        names = [d.name for d in list_dictionaries(con)]
        return names, {n: get_metrics(con, n) for n in names}, con.execute(
            "SELECT name FROM corpora ORDER BY name").fetchall()
    finally:
        con.close()


def _reference_metrics(ws, folder, n_tokens):
    """FVU and L0 from the definition, on the corpus' last contexts run through the model independently."""
    from analysis.evaluate import activation_metrics
    from sae.dictionaries import load_dictionary
    from sae.models import load_model
    from store.corpora import context_tokens

    con = connect(ws / "sparsescope.duckdb", read_only=True)
    n = con.execute("SELECT n_contexts FROM corpora WHERE name = 'small'").fetchone()[0]
    count = min(n, -(-n_tokens // CTX))
    tokens = torch.tensor(context_tokens(con, "small", n - count, n))
    con.close()
    lm = load_model(TINY_MODEL, device="cpu")
    with torch.no_grad():
        _, cache = lm.run_with_cache(tokens, names_filter=TINY_HOOK)
    rows = cache[TINY_HOOK][:, 1:].reshape(-1, lm.cfg.d_model)
    return activation_metrics(load_dictionary(folder), rows)


def test_import_evaluates_stores_and_analyze_works_at_once(monkeypatch, capsys, tmp_path, small_ws):
    folder = saved_dictionary(tmp_path / "mine", arch="topk", d_sae=128, k=4)
    code, out, err = run_cli(monkeypatch, capsys, "import", str(folder), "--corpus", "small", "--eval-tokens", "640",
                             "-w", str(small_ws))
    assert code in (0, None), err
    assert "imported mine (topk" in out and "FVU" in out and "CE recovered" in out
    assert f"evaluated on {20 * (CTX - 1):,} tokens of corpus small (tiny-random forward)" in out
    names, metrics, _ = _state(small_ws)
    stored = metrics["mine"]
    assert names == ["mine"] and stored["eval_tokens"] == 20 * (CTX - 1)
    reference = _reference_metrics(small_ws, folder, 640)
    for key in ("fvu", "l0", "dead"):
        assert stored[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-9), key
    assert stored["l0"] == 4 and 0 <= stored["dead"] <= 1
    assert stored["ce_clean"] < stored["ce_zero"] and stored["ce_recovered"] == pytest.approx(
        (stored["ce_zero"] - stored["ce_sae"]) / (stored["ce_zero"] - stored["ce_clean"]))
    code, out, err = run_cli(monkeypatch, capsys, "analyze", "mine", "--corpus", "small", "--tokens", "640",
                             "--examples", "3", "--quantiles", "2", "-w", str(small_ws))
    assert code in (0, None), err
    assert "mine" in out and "features fire" in out
    con = connect(small_ws / "sparsescope.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM features WHERE dictionary = 'mine'").fetchone()[0] == 128
    con.close()


def test_import_reads_a_covering_activation_cache(monkeypatch, capsys, tmp_path, small_ws):
    code, _, err = run_cli(monkeypatch, capsys, "activations", "--model", TINY_MODEL, "--hook", TINY_HOOK,
                           "--corpus", "small", "--tokens", str(40 * CTX), "--device", "cpu", "-w", str(small_ws))
    assert code in (0, None), err
    folder = saved_dictionary(tmp_path / "mine", arch="relu", d_sae=96)
    code, out, err = run_cli(monkeypatch, capsys, "import", str(folder), "--corpus", "small", "-w", str(small_ws))
    assert code in (0, None), err
    assert "of corpus small (activation cache" in out
    stored = _state(small_ws)[1]["mine"]
    assert stored["eval_tokens"] == 2 * (CTX - 1) and stored["ce_recovered"] == stored["ce_recovered"]  # 5% of 40
    code, out, err = run_cli(monkeypatch, capsys, "import", str(folder), "--name", "fewer", "--corpus", "small",
                             "--eval-tokens", str(CTX), "-w", str(small_ws))
    assert code in (0, None), err
    assert _state(small_ws)[1]["fewer"]["eval_tokens"] == CTX - 1  # the first held-out context only


def test_no_eval_imports_without_metrics(monkeypatch, capsys, tmp_path, small_ws):
    folder = saved_dictionary(tmp_path / "mine", arch="mp", d_sae=96, k=3)
    code, out, err = run_cli(monkeypatch, capsys, "import", str(folder), "--no-eval", "-w", str(small_ws))
    assert code in (0, None), err
    assert "not evaluated (--no-eval)" in out and "FVU" not in out
    assert _state(small_ws)[:2] == (["mine"], {"mine": {}})


def _plain(tmp_path, model: str, hook: str, d_in: int):
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=32))
    sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name = model, hook
    folder = tmp_path / "theirs"
    sae.save_model(folder)
    return folder


@pytest.mark.parametrize("model, hook, d_in, needle", [
    ("no-such-model", TINY_HOOK, 64, "unknown model 'no-such-model'"),
    (TINY_MODEL, "blocks.7.hook_resid_post", 64, "hook 'blocks.7.hook_resid_post' is on layer 7"),
    (TINY_MODEL, "blocks.0.hook_nothing", 64, "unknown hook 'blocks.0.hook_nothing'"),
    (TINY_MODEL, TINY_HOOK, 32, "the dictionary has d_in=32, but tiny-random gives d=64 at blocks.0.hook_resid_post"),
])
def test_a_model_or_hook_the_workspace_cannot_provide_is_one_line(monkeypatch, capsys, tmp_path, small_ws, model,
                                                                   hook, d_in, needle):
    folder = _plain(tmp_path, model, hook, d_in)
    before = _state(small_ws)
    code, _, err = run_cli(monkeypatch, capsys, "import", str(folder), "--corpus", "builtin", "-w", str(small_ws))
    assert code == 2 and needle in error_line(err)
    assert _state(small_ws) == before  # no dictionary, no metrics, and the builtin corpus was not created
    assert not (small_ws / "dictionaries" / "theirs").exists()


def test_the_cli_default_is_the_evaluation_default():
    import inspect

    from analysis.byod import EVAL_TOKENS
    from app.commands.dicts import import_cmd

    assert inspect.signature(import_cmd).parameters["eval_tokens"].default == EVAL_TOKENS


def test_the_store_is_free_while_the_dictionary_is_evaluated(monkeypatch, capsys, tmp_path, small_ws):
    """Another process can write the store while import evaluates (the model runs without the store held)."""
    import subprocess
    import sys

    import analysis.byod

    evaluate = analysis.byod.evaluate_import
    writes = []

    def evaluate_while_another_process_writes(*args, **kwargs):
        code = ("import sys; from store import connect; con = connect(sys.argv[1], wait_s=0.5); "
                "con.execute('CHECKPOINT'); con.close()")
        writes.append(subprocess.run([sys.executable, "-c", code, str(small_ws / "sparsescope.duckdb")],
                                     capture_output=True, text=True, timeout=120))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(analysis.byod, "evaluate_import", evaluate_while_another_process_writes)
    folder = saved_dictionary(tmp_path / "mine", arch="topk", d_sae=128, k=4)
    code, _, err = run_cli(monkeypatch, capsys, "import", str(folder), "--corpus", "small", "-w", str(small_ws))
    assert code in (0, None), err
    assert [w.returncode for w in writes] == [0], writes[0].stderr
