"""`sparsescope activations` killed with SIGKILL after a shard, right before and right after its commit: the store
opens, every shard the manifest lists is whole, and a rerun resumes to the cache an uninterrupted run writes."""
import pytest

from sae.activation_reader import ActivationReader
from sae.activations import read_manifest
from tests.helpers import cli_process, copy_workspace, run_cli, store_rows

pytestmark = pytest.mark.slow
HOOK = "blocks.1.hook_resid_post"
ARGS = ("activations", "--model", "tiny-random", "--hook", HOOK, "--corpus", "t", "--tokens", "100000",
        "--batch", "64")
FOLDER = f"activations/tiny-random__{HOOK}__t"


@pytest.fixture(scope="module")
def reference(fault_base, tmp_path_factory, tiny_model):
    """The same cache written by an uninterrupted run."""
    from analysis.activations import build_cache
    from store import Workspace

    root = copy_workspace(fault_base, tmp_path_factory.mktemp("reference") / "ws")
    build_cache(Workspace(root), None, tiny_model, HOOK, "t", 100_000, batch=64, progress=False)
    return root


def _cache(root):
    manifest = read_manifest(root / FOLDER)
    shards = [(s.file, s.start_context, s.n_contexts, s.rows, s.bytes, s.sha256) for s in manifest.shards]
    rows = store_rows(root / "sparsescope.duckdb", "activation_caches", "hook = ?", (HOOK,), root=root)
    return shards, manifest.complete, rows


@pytest.mark.parametrize("point", ["activations.shard:2", "activations.commit", "activations.committed"])
def test_a_killed_cache_resumes_to_the_same_shards(fault_base, reference, tmp_path, monkeypatch, capsys, point):
    root = copy_workspace(fault_base, tmp_path / "ws")
    killed = cli_process(*ARGS, "-w", root, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    shards, complete, rows = _cache(root)  # the store opens
    assert rows == (_cache(reference)[2] if point == "activations.committed" else [])
    all_shards = len(_cache(reference)[0])
    assert all_shards > 2 and len(shards) == (2 if point == "activations.shard:2" else all_shards)
    assert complete == (point != "activations.shard:2")
    reader = ActivationReader(root / FOLDER)  # what the manifest lists is whole: size, hash, finite values
    for index in range(len(reader.manifest.shards)):
        reader.load_shard(index)
    assert shards == _cache(reference)[0][:len(shards)]
    code, out, err = run_cli(monkeypatch, capsys, *ARGS, "-w", str(root))
    assert code in (0, None), err
    assert _cache(root) == _cache(reference)
