"""`sparsescope activations --hook A,B`: several caches from one forward pass; a hook named twice is refused."""
from tests.helpers import error_line, run_cli

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def test_several_hooks_are_cached_and_registered(monkeypatch, capsys, tmp_path):
    ws = tmp_path / "ws"
    code, out, _ = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook", ",".join(HOOKS),
                           "--tokens", "256", "-w", str(ws))
    assert code in (0, None)
    for hook in HOOKS:
        assert f"wrote 256 tokens x d=64 at {hook}" in out
        assert (ws / "activations" / f"tiny-random__{hook}__builtin" / "manifest.json").is_file()
    code, out, _ = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook", HOOKS[1],
                           "--tokens", "256", "-w", str(ws))
    assert code in (0, None) and f"reused 256 tokens x d=64 at {HOOKS[1]}" in out


def test_a_hook_named_twice_is_refused_and_nothing_is_cached(monkeypatch, capsys, tmp_path):
    ws = tmp_path / "ws"
    code, _, err = run_cli(monkeypatch, capsys, "activations", "--model", "tiny-random", "--hook",
                           f"{HOOKS[0]},{HOOKS[0]}", "--tokens", "256", "-w", str(ws))
    assert code == 2 and "give each hook once" in error_line(err)
    assert not (ws / "activations").exists() or not any((ws / "activations").iterdir())
