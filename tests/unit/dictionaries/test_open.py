"""analysis.dictionaries.open_dictionary: the one way to load a workspace dictionary by name."""
import pytest
import torch

from analysis.dictionaries import open_dictionary
from sae.dictionaries import DictSpec, build_training_sae, save_dictionary
from store import session
from store.dictionaries import DictionaryRow, add_dictionary
from store.errors import InputError


def _add(ws, name: str, hook: str = "blocks.0.hook_resid_post", d_in: int = 16, folder=None):
    sae = build_training_sae(DictSpec("topk", d_in, 32, k=4, hook_name=hook))
    folder = folder or ws.dictionaries_dir / name
    save_dictionary(sae, folder)
    with session(ws.db_path) as con:
        add_dictionary(con, DictionaryRow(name, "tiny-random", hook, "topk", d_in, 32, 4, str(folder)))
    return sae


def test_opens_by_name_with_the_store_row(ws, seed):
    trained = _add(ws, "d")
    row, sae = open_dictionary(ws, "d", "cpu")
    assert row.name == "d" and row.hook == "blocks.0.hook_resid_post"
    x = torch.randn(5, 16)
    torch.testing.assert_close(sae.encode(x), trained.encode(x))


def test_a_hook_z_dictionary_takes_flat_rows(ws, seed):
    # 4 heads x 8 dims, flattened head-major: the loaded dictionary must read [n, 32] rows as they are
    trained = _add(ws, "z", hook="blocks.0.attn.hook_z", d_in=32)
    _, sae = open_dictionary(ws, "z", "cpu")
    assert not sae.hook_z_reshaping_mode
    x = torch.randn(3, 32)
    torch.testing.assert_close(sae.encode(x), trained.encode(x))


def test_a_moved_workspace_finds_its_folder(ws, tmp_path, seed):
    _add(ws, "moved", folder=ws.dictionaries_dir / "moved")
    with session(ws.db_path) as con:  # the row records a path that no longer exists (the workspace moved)
        con.execute("UPDATE dictionaries SET path = ? WHERE name = 'moved'", [str(tmp_path / "elsewhere")])
    row, sae = open_dictionary(ws, "moved", "cpu")
    assert sae.cfg.d_sae == 32


@pytest.mark.parametrize("damage, message", [
    ("unknown", "unknown dictionary 'nope'"),
    ("missing", "its folder"),
    ("corrupt", "cannot load the dictionary"),
])
def test_bad_input_is_one_input_error(ws, seed, damage, message):
    _add(ws, "d")
    name = "nope" if damage == "unknown" else "d"
    if damage == "missing":
        for f in (ws.dictionaries_dir / "d").iterdir():
            f.unlink()
        (ws.dictionaries_dir / "d").rmdir()
    if damage == "corrupt":
        (ws.dictionaries_dir / "d" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=message):
        open_dictionary(ws, name, "cpu")


def test_a_failed_import_leaves_no_staging_and_sweeps_a_killed_ones(ws, seed, tmp_path, monkeypatch):
    import shutil

    import analysis.dictionaries as dictionaries
    from analysis.dictionaries import import_dictionary
    from tests.helpers import killed_staging

    source = tmp_path / "plain"
    save_dictionary(build_training_sae(DictSpec("topk", 16, 32, k=4)), source)
    ws.dictionaries_dir.mkdir()
    killed = killed_staging(ws.dictionaries_dir, "other")
    killed.mkdir()
    real = shutil.copytree

    def failing(src, dst, **kwargs):
        real(src, dst, **kwargs)
        raise OSError("No space left on device")
    monkeypatch.setattr(dictionaries.shutil, "copytree", failing)
    with session(ws.db_path) as con, pytest.raises(OSError):
        import_dictionary(ws, con, str(source), "plain")
    assert list(ws.dictionaries_dir.iterdir()) == []
    monkeypatch.undo()
    killed.mkdir()
    with session(ws.db_path) as con:
        import_dictionary(ws, con, str(source), "plain")
    assert [p.name for p in ws.dictionaries_dir.iterdir()] == ["plain"]
