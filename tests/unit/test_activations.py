import json

import pytest
import torch

from analysis.activations import build_cache, build_caches
from analysis.corpora import add_corpus
from sae.activation_reader import ActivationReader
from sae.activations import MANIFEST, Manifest, read_manifest, write_cache, write_caches
from store.errors import InputError

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture
def corpus(con, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("".join(f"Line {i} of the test corpus says something new.\n\n" for i in range(400)))
    return add_corpus(con, "t", str(src), "tiny-random", ctx=16)


def _tokens(con, name):
    from store.corpora import context_tokens

    return lambda lo, hi: context_tokens(con, name, lo, hi)


def _reference(model, con, corpus, n):
    from store.corpora import context_tokens

    ids = torch.tensor(context_tokens(con, corpus.name, 0, n))
    _, cache = model.run_with_cache(ids, names_filter=HOOK)
    return cache[HOOK].reshape(n, corpus.ctx, -1)


def test_cache_matches_a_direct_forward_and_reads_back(tiny_model, con, ws, corpus):
    result = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 40, batch=7, progress=False)
    manifest = result.manifest
    assert manifest.complete and manifest.contexts_done == 40 and manifest.d == 64
    reader = ActivationReader(result.path)
    ids, acts = zip(*reader.contexts())
    acts = torch.cat(acts)
    assert torch.equal(torch.cat(ids), torch.arange(40))
    torch.testing.assert_close(acts, _reference(tiny_model, con, corpus, 40), atol=1e-5, rtol=1e-5)
    again = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 40, progress=False)
    assert again.reused


def test_shuffled_batches_cover_every_row_once(tiny_model, con, ws, corpus):
    folder = ws.activations_dir / "c"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=30)
    write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), want, batch=4, shard_contexts=8, progress=False)
    reader = ActivationReader(folder)
    rows = torch.cat(list(reader.batches(batch_size=50, shuffle=True, seed=1, skip_first=True)))
    ordered = torch.cat([a[:, 1:].reshape(-1, 64) for _, a in reader.contexts()])
    assert rows.shape == ordered.shape == (30 * 15, 64)
    assert not torch.equal(rows, ordered)  # shuffled
    assert torch.equal(rows.sort(dim=0).values, ordered.sort(dim=0).values)  # same multiset of rows


def test_killed_run_resumes_from_last_complete_shard(tiny_model, con, ws, corpus, monkeypatch):
    folder = ws.activations_dir / "r"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=32)
    calls = []
    real = _tokens(con, "t")

    def dying(lo, hi):
        calls.append(lo)
        if lo >= 16:  # die while computing the third shard
            raise KeyboardInterrupt
        return real(lo, hi)

    with pytest.raises(KeyboardInterrupt):
        write_cache(tiny_model, HOOK, folder, dying, want, batch=8, shard_contexts=8, progress=False)
    partial = read_manifest(folder)
    assert partial.contexts_done == 16 and not partial.complete
    resumed_from = []

    def counting(lo, hi):
        resumed_from.append(lo)
        return real(lo, hi)

    done = write_cache(tiny_model, HOOK, folder, counting, want, batch=8, shard_contexts=8, progress=False)
    assert done.complete and done.contexts_done == 32 and min(resumed_from) == 16
    acts = torch.cat([a for _, a in ActivationReader(folder).contexts()])
    torch.testing.assert_close(acts, _reference(tiny_model, con, corpus, 32), atol=1e-5, rtol=1e-5)


def test_corrupted_manifest_and_shards_are_detected(tiny_model, con, ws, corpus):
    folder = ws.activations_dir / "x"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=16)
    manifest = write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), want, batch=8, shard_contexts=8,
                           progress=False)
    shard = folder / manifest.shards[1].file
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes
    shard.write_bytes(bytes(data))
    reader = ActivationReader(folder)  # sizes still match
    next(reader.contexts())  # first shard is fine
    with pytest.raises(InputError, match="SHA-256"):
        list(reader.contexts())
    shard.write_bytes(bytes(data[:100]))
    with pytest.raises(InputError, match="bytes"):
        ActivationReader(folder)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="manifest .* is corrupted"):
        ActivationReader(folder)
    (folder / MANIFEST).write_text(json.dumps({"model": "m"}))
    with pytest.raises(InputError, match="corrupted"):
        read_manifest(folder)


def test_resume_refuses_a_different_cache_in_the_same_folder(tiny_model, con, ws, corpus):
    folder = ws.activations_dir / "y"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=8)
    write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), want, progress=False)
    other = Manifest(model="tiny-random", hook="blocks.1.hook_resid_post", corpus="t", d=64, ctx=16, n_contexts=8)
    with pytest.raises(InputError, match="different activation cache"):
        write_cache(tiny_model, "blocks.1.hook_resid_post", folder, _tokens(con, "t"), other, progress=False)


def test_hook_z_is_flattened_head_major(tiny_model, con, ws, corpus):
    hook = "blocks.1.attn.hook_z"
    result = build_cache(ws, con, tiny_model, hook, "t", tokens=16 * 4, progress=False)
    _, acts = next(ActivationReader(result.path).contexts())
    from store.corpora import context_tokens

    _, cache = tiny_model.run_with_cache(torch.tensor(context_tokens(con, "t", 0, 4)), names_filter=hook)
    z = cache[hook]  # [batch, pos, head, d_head]
    assert acts.shape[-1] == z.shape[2] * z.shape[3]
    torch.testing.assert_close(acts[0, 3, 16:32], z[0, 3, 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hook, message", [
    ("blocks.7.hook_resid_post", "layers 0..1"),
    ("blocks.0.hook_nonsense", "unknown hook"),
])
def test_bad_hooks_write_nothing(tiny_model, con, ws, corpus, hook, message):
    with pytest.raises(InputError, match=message):
        build_cache(ws, con, tiny_model, hook, "t", tokens=100, progress=False)
    assert not ws.activations_dir.exists()
    assert con.execute("SELECT count(*) FROM activation_caches").fetchone()[0] == 0


def test_zero_tokens_and_unknown_corpus(tiny_model, con, ws, corpus):
    with pytest.raises(ValueError, match="positive"):
        build_cache(ws, con, tiny_model, HOOK, "t", tokens=0, progress=False)
    with pytest.raises(ValueError, match="unknown corpus"):
        build_cache(ws, con, tiny_model, HOOK, "nope", tokens=10, progress=False)
    assert not ws.activations_dir.exists()


def _small_cache(tiny_model, con, folder):
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=16)
    return write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), want, batch=8, shard_contexts=8, progress=False)


@pytest.mark.parametrize("shard_file", ["../outside.safetensors", "/etc/hostname", "sub/x.safetensors", ".."])
def test_shard_names_stay_inside_the_cache_folder(tiny_model, con, ws, corpus, shard_file):
    folder = ws.activations_dir / "z"
    _small_cache(tiny_model, con, folder)
    raw = json.loads((folder / MANIFEST).read_text())
    raw["shards"][0]["file"] = shard_file
    (folder / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"manifest .* is corrupted: activation shard name .* must start"):
        ActivationReader(folder)


def test_a_shard_linked_out_of_the_cache_is_refused(tiny_model, con, ws, corpus, tmp_path):
    folder = ws.activations_dir / "z"
    manifest = _small_cache(tiny_model, con, folder)
    outside = tmp_path / "outside.safetensors"
    (folder / manifest.shards[0].file).rename(outside)
    (folder / manifest.shards[0].file).symlink_to(outside)
    with pytest.raises(InputError, match="activation shard 'shard_00000000.safetensors' leads to"):
        ActivationReader(folder)


def test_manifest_is_fsynced_and_a_killed_writers_temp_files_are_swept(tiny_model, con, ws, corpus, monkeypatch):
    from store import paths
    from tests.helpers import killed_staging

    folder = ws.activations_dir / "k"
    folder.mkdir(parents=True)
    left = [killed_staging(folder, "shard_00000008.safetensors"), killed_staging(folder, "manifest.json")]
    for path in left:
        path.write_bytes(b"half a shard")
    synced = []
    real = paths.os.fsync
    monkeypatch.setattr(paths.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    _small_cache(tiny_model, con, folder)
    assert len(synced) == 2 * 2  # two shards, each followed by the manifest: file and folder
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "shard_00000000.safetensors",
                                                        "shard_00000008.safetensors"]


def _replace_text(con, tmp_path, text="Other words entirely, about rivers and boats.\n\n"):
    """Rebuild corpus `t` from other text, deleting what was built on it (their folders stay: no workspace)."""
    src = tmp_path / "other.txt"
    src.write_text(text * 400)
    return add_corpus_forced(con, src)


def add_corpus_forced(con, src):
    from analysis.corpora import build_corpus

    return build_corpus(con, "t", str(src), "tiny-random", ctx=16, replace=True, force=True).corpus


def test_a_cache_records_its_corpus_fingerprint(tiny_model, con, ws, corpus):
    from store.corpora import corpus_fingerprint
    from store.models import get_cache

    result = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False)
    fingerprint = corpus_fingerprint(con, "t")
    assert result.manifest.corpus_fingerprint == fingerprint and len(fingerprint) == 64
    assert read_manifest(result.path).corpus_fingerprint == fingerprint
    assert get_cache(con, result.path.name).corpus_fingerprint == fingerprint


def test_a_cache_of_replaced_text_is_rebuilt_not_reused(tiny_model, con, ws, corpus, tmp_path):
    first = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False)
    new = _replace_text(con, tmp_path)
    assert first.path.is_dir()  # left on disk by a replace that did not know the workspace
    again = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False)
    assert not again.reused and "earlier text of corpus 't'" in again.note and "rebuilding" in again.note
    acts = torch.cat([a for _, a in ActivationReader(again.path).contexts()])
    torch.testing.assert_close(acts, _reference(tiny_model, con, new, 8), atol=1e-5, rtol=1e-5)
    assert build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False).reused


def test_a_cache_without_a_fingerprint_is_rebuilt_with_a_note(tiny_model, con, ws, corpus):
    first = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False)
    raw = json.loads((first.path / MANIFEST).read_text())
    del raw["corpus_fingerprint"]  # as written before caches recorded it
    (first.path / MANIFEST).write_text(json.dumps(raw))
    again = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 8, progress=False)
    assert not again.reused and "predates corpus fingerprints" in again.note
    assert read_manifest(again.path).corpus_fingerprint == again.manifest.corpus_fingerprint is not None


def test_a_partial_cache_of_other_text_is_never_resumed(tiny_model, con, ws, corpus, tmp_path, monkeypatch):
    from functools import partial

    import analysis.activations

    real = analysis.activations.context_tokens

    def dying(con, name, lo, hi):
        if lo >= 8:
            raise KeyboardInterrupt
        return real(con, name, lo, hi)

    monkeypatch.setattr(analysis.activations, "write_caches", partial(write_caches, shard_contexts=8))
    monkeypatch.setattr(analysis.activations, "context_tokens", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 16, batch=8, progress=False)
    monkeypatch.setattr(analysis.activations, "context_tokens", real)
    assert read_manifest(ws.activations_dir / "tiny-random__blocks.0.hook_resid_post__t").contexts_done == 8
    new = _replace_text(con, tmp_path)
    result = build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 16, batch=8, progress=False)
    assert "earlier text" in result.note
    acts = torch.cat([a for _, a in ActivationReader(result.path).contexts()])
    torch.testing.assert_close(acts, _reference(tiny_model, con, new, 16), atol=1e-5, rtol=1e-5)


def test_write_cache_refuses_to_resume_other_text(tiny_model, con, ws, corpus):
    folder = ws.activations_dir / "f"
    want = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=8, corpus_fingerprint="a")
    write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), want, progress=False)
    other = Manifest(model="tiny-random", hook=HOOK, corpus="t", d=64, ctx=16, n_contexts=16, corpus_fingerprint="b")
    with pytest.raises(InputError, match="other text"):
        write_cache(tiny_model, HOOK, folder, _tokens(con, "t"), other, progress=False)


def _reference_at(model, con, corpus, n, hook):
    from store.corpora import context_tokens

    ids = torch.tensor(context_tokens(con, corpus.name, 0, n))
    _, cache = model.run_with_cache(ids, names_filter=hook)
    return cache[hook].reshape(n, corpus.ctx, -1)


def test_several_hooks_cache_from_one_forward_each_as_if_alone(tiny_model, con, ws, corpus, monkeypatch):
    import sae.activations

    hooks = ["blocks.1.hook_resid_post", HOOK, "blocks.0.attn.hook_z"]
    forwards = []
    real = sae.activations.capture_many
    monkeypatch.setattr(sae.activations, "capture_many",
                        lambda m, hs, ids, stop: forwards.append((tuple(hs), stop)) or real(m, hs, ids, stop))
    results = build_caches(ws, con, tiny_model, hooks, "t", tokens=16 * 24, batch=8, progress=False)
    assert [r.manifest.hook for r in results] == hooks and not any(r.reused for r in results)
    assert forwards == [(tuple(hooks), 2)] * 3  # 24 contexts in batches of 8, run to the deepest block only
    for hook, result in zip(hooks, results):
        acts = torch.cat([a for _, a in ActivationReader(result.path).contexts()])
        want = _reference_at(tiny_model, con, corpus, 24, hook).reshape(24, 16, -1)
        torch.testing.assert_close(acts, want, atol=1e-5, rtol=1e-5)
    again = build_caches(ws, con, tiny_model, hooks[:2], "t", tokens=16 * 24, progress=False)
    assert all(r.reused for r in again) and len(forwards) == 3


def test_a_hook_behind_the_others_is_caught_up_without_rerunning_them(tiny_model, con, ws, corpus, monkeypatch):
    from functools import partial

    import analysis.activations
    import sae.activations

    monkeypatch.setattr(analysis.activations, "write_caches", partial(write_caches, shard_contexts=8))
    build_cache(ws, con, tiny_model, HOOK, "t", tokens=16 * 16, batch=8, progress=False)  # 16 contexts at HOOK
    forwards = []
    real = sae.activations.capture_many
    monkeypatch.setattr(sae.activations, "capture_many",
                        lambda m, hs, ids, stop: forwards.append(tuple(hs)) or real(m, hs, ids, stop))
    deeper = "blocks.1.hook_resid_post"
    results = build_caches(ws, con, tiny_model, [HOOK, deeper], "t", tokens=16 * 24, batch=8, progress=False)
    # contexts 0-15 run for the deeper hook only; 16-23 for both
    assert forwards == [(deeper,), (deeper,), (HOOK, deeper)]
    for hook, result in zip([HOOK, deeper], results):
        assert result.manifest.complete and result.manifest.contexts_done == 24
        acts = torch.cat([a for _, a in ActivationReader(result.path).contexts()])
        torch.testing.assert_close(acts, _reference_at(tiny_model, con, corpus, 24, hook), atol=1e-5, rtol=1e-5)


def test_a_hook_given_twice_is_refused_before_the_model_runs(tiny_model, con, ws, corpus):
    with pytest.raises(InputError, match="give each hook once"):
        build_caches(ws, con, tiny_model, [HOOK, HOOK], "t", tokens=64, progress=False)
    assert not ws.activations_dir.exists() or not any(ws.activations_dir.iterdir())
