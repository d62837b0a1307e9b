"""A feature's evidence read from the store: windows match their contexts, the explain and held-out sets never share
a context, non-activating windows come from other contexts."""
import numpy as np

from analysis.explain.evidence import HELDOUT_SHARE, EvidenceReader, heldout, read_windows


def _contexts(con):
    rows = con.execute("SELECT context_id, token_ids FROM contexts WHERE corpus = 'demo-text'").fetchall()
    return {c: np.array(t) for c, t in rows}


def test_heldout_split_is_fixed_and_near_its_share():
    ids = np.arange(20_000)
    share = heldout(ids).mean()
    assert abs(share - HELDOUT_SHARE) < 0.02
    assert (heldout(ids[::-1]) == heldout(ids)[::-1]).all()


def test_windows_hold_their_contexts_tokens(planted):
    con, _ = planted
    owner, w = read_windows(con, "planted", [1, 2, 3])
    assert set(owner.tolist()) == {1, 2, 3} and w.n_windows == len(owner) > 0
    contexts = _contexts(con)
    for i in range(w.n_windows):
        tokens = contexts[w.context_ids[i]]
        lo, hi = w.offsets[i], w.offsets[i + 1]
        start = w.starts[i]
        assert w.token_ids[lo:hi].tolist() == tokens[start:start + hi - lo].tolist()
        assert w.prev_ids[lo] == (tokens[start - 1] if start > 0 else -1)
        assert (w.prev_ids[lo + 1:hi] == w.token_ids[lo:hi - 1]).all()


def test_explain_and_heldout_sets_split_by_context(planted):
    con, tokens = planted
    evidence = EvidenceReader(con, "planted", seed=0).read(con, [1, 2, 5])
    for feature, ev in evidence.items():
        assert ev.explain.n_windows > 0 and ev.heldout.n_windows > 0
        assert not heldout(ev.explain.context_ids).any() and heldout(ev.heldout.context_ids).all()
        # every window of the planted feature fires on its token
        assert (ev.heldout.acts[ev.heldout.token_ids == tokens[feature]] > 0).all()
        mine = con.execute("SELECT DISTINCT context_id FROM feature_examples WHERE dictionary = 'planted' "
                           "AND feature = ?", [feature]).fetchall()
        assert ev.negatives.n_windows == ev.heldout.n_windows
        assert not set(ev.negatives.context_ids.tolist()) & {r[0] for r in mine}
        assert heldout(ev.negatives.context_ids).all() and (ev.negatives.acts == 0).all()
        assert (ev.negatives.starts >= 1).all()


def test_reading_is_deterministic_whatever_the_batch(planted):
    con, _ = planted
    alone = EvidenceReader(con, "planted", seed=3).read(con, [4])[4]
    together = EvidenceReader(con, "planted", seed=3).read(con, [2, 4, 9])[4]
    for part in ("explain", "heldout", "negatives"):
        assert (getattr(alone, part).token_ids == getattr(together, part).token_ids).all()
