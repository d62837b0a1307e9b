"""Feature statistics built for wide dictionaries, against brute force: sparse co-occurrence above the old dense
limit (8,192 features), band samples and windows drawn from the firing log, selection helpers."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from analysis.features.ranking import segment_ids, smallest_per_group, stable_argsort
from analysis.features.stats import FeatureStatsAccumulator, StatsConfig
from analysis.features.streaming import hash_keys

WIDE = 9_000
N_CTX, CTX_LEN = 12, 24
BATCHES = [(0, 5), (5, 6), (6, 12)]


def wide_acts(seed: int = 0, uneven: bool = False) -> torch.Tensor:
    """TopK-like activations over WIDE features: 12 firings per token from a pool of 300 popular features and the
    whole range (so both frequent and rare pairs exist); uneven adds a token where 400 features fire."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.zeros(N_CTX, CTX_LEN, WIDE)
    pool = torch.randint(0, WIDE, (300,), generator=g)
    for c in range(N_CTX):
        for p in range(CTX_LEN):
            popular = pool[torch.randint(0, 300, (8,), generator=g)]
            anywhere = torch.randint(0, WIDE, (4,), generator=g)
            idx = torch.cat([popular, anywhere])
            acts[c, p, idx] = torch.rand(len(idx), generator=g) + 0.05
    if uneven:
        acts[3, 5, torch.randint(0, WIDE, (400,), generator=g)] = 0.5
    acts[2, 7, 11] = acts[9, 3, 11] = 2.0  # a tie in activation: the earlier token wins
    return acts


def run(acts: torch.Tensor, cfg: StatsConfig):
    acc = FeatureStatsAccumulator(acts.shape[-1], cfg)
    for start, stop in BATCHES:
        acc.update(acts[start:stop], torch.arange(start, stop) + 100)
    return acc, acc.finish()


def brute_cooccurrence(acts: torch.Tensor, skip_first: int, n: int):
    """Per feature, its n partners by (Jaccard descending, id ascending), from pair counts made token by token."""
    fired = [torch.nonzero(row > 0).squeeze(1).tolist() for row in acts[:, skip_first:].reshape(-1, acts.shape[-1])]
    count = Counter(f for fs in fired for f in fs)
    both = Counter((i, j) for fs in fired for i in fs for j in fs if i != j)
    partners: dict[int, list] = {}
    for (i, j), b in both.items():
        partners.setdefault(i, []).append((-b / (count[i] + count[j] - b), j))
    return {i: sorted(p)[:n] for i, p in partners.items()}


@pytest.mark.parametrize("uneven, chunk", [(False, 8_000_000), (False, 60), (True, 300)])
def test_sparse_cooccurrence_above_8192_features_matches_brute_force(uneven, chunk, monkeypatch):
    # small PAIR_CHUNK: many blocks, and features whose pairs alone exceed a block (counted as dense rows)
    monkeypatch.setattr("analysis.features.cooccurrence.PAIR_CHUNK", chunk)
    acts = wide_acts(uneven=uneven)
    _, stats = run(acts, StatsConfig(n_examples=3, n_quantiles=2, window=2, n_cooc=6, skip_first=1))
    assert stats.cooc_ids is not None, "co-occurrence must be counted at any width"
    expected = brute_cooccurrence(acts, 1, 6)
    for f in range(WIDE):
        got = stats.cooc_ids[f] >= 0
        want = expected.get(f, [])
        assert stats.cooc_ids[f][got].tolist() == [j for _, j in want]
        np.testing.assert_allclose(stats.cooc_jaccard[f][got], [-s for s, _ in want], rtol=1e-12)
        assert np.all(stats.cooc_jaccard[f][~got] == 0)


def test_cooccurrence_left_out_only_when_asked():
    acts = wide_acts()
    _, stats = run(acts, StatsConfig(n_examples=2, n_quantiles=2, window=1, cooc_max_d_sae=8192))
    assert stats.cooc_ids is None
    assert StatsConfig().cooc_max_d_sae is None


def brute_bands(acts, f, max_act, q, n, seed, skip_first):
    """Per band: the (context, position) of its n firings with the smallest hash keys (ties: earlier token)."""
    a = acts[:, :, f].numpy()
    ctx, pos = np.nonzero(a > 0)
    keep = pos >= skip_first
    ctx, pos = ctx[keep], pos[keep]
    v = a[ctx, pos].astype(np.float64)
    keys = hash_keys(torch.as_tensor(ctx + 100), torch.as_tensor(pos), torch.full((len(v),), f), seed).numpy()
    band = np.clip(np.ceil(v * q / np.float64(max_act)) - 1, 0, q - 1)
    out = []
    for b in range(q):
        i = np.flatnonzero(band == b)
        i = i[np.lexsort((ctx[i] * CTX_LEN + pos[i], keys[i]))][:n]
        out.append(list(zip(ctx[i] + 100, pos[i])))
    return out


def test_band_samples_are_exact_bottom_keys_with_windows():
    acts = wide_acts(seed=1)[:, :, :400].contiguous()  # denser per feature: bands hold more than n
    cfg = StatsConfig(n_examples=4, n_quantiles=3, window=2, skip_first=1)
    acc, stats = run(acts, cfg)
    width = 2 * cfg.window + 1
    q = stats.quantiles
    for f in range(acts.shape[-1]):
        expected = brute_bands(acts, f, stats.max_act[f], 3, 4, cfg.seed, 1)
        for b in range(3):
            got = q.context_id[f, b] >= 0
            assert list(zip(q.context_id[f, b][got], q.position[f, b][got])) == expected[b]
            for r in np.flatnonzero(got):
                c, start = q.context_id[f, b, r] - 100, q.window_start[f, b, r]
                # the window shows every position, also the left-out position 0
                np.testing.assert_array_equal(q.window[f, b, r], acts[c, start:start + width, f].numpy())
    assert q.windows.shape == (int((q.context_id >= 0).sum()), width)  # only filled slots hold a window
    n_firings = int((acts[:, 1:] > 0).sum())
    assert len(acc.log) == n_firings and acc.log.nbytes == 16 * n_firings


def test_top_examples_break_ties_by_earlier_token():
    acts = wide_acts()
    _, stats = run(acts, StatsConfig(n_examples=1, n_quantiles=1, window=1))
    assert (stats.top.context_id[11, 0], stats.top.position[11, 0]) == (102, 7)


def test_windows_in_contexts_shorter_than_the_window_end_in_nan():
    acts = wide_acts()[:, :4, :50].contiguous()
    acc = FeatureStatsAccumulator(50, StatsConfig(n_examples=2, n_quantiles=2, window=3))
    acc.update(acts, torch.arange(N_CTX))
    stats = acc.finish()
    f = int(np.argmax(stats.count))
    assert np.isnan(stats.top.window[f, 0, 4:]).all()
    c = stats.top.context_id[f, 0]
    np.testing.assert_array_equal(stats.top.window[f, 0, :4], acts[c, :, f].numpy())


def test_contexts_must_keep_their_length():
    acc = FeatureStatsAccumulator(10, StatsConfig())
    acc.update(torch.rand(2, 5, 10), torch.arange(2))
    with pytest.raises(ValueError, match="contexts of 5 tokens"):
        acc.update(torch.rand(2, 6, 10), torch.arange(2, 4))


def test_selection_helpers_match_sorting():
    rng = np.random.default_rng(0)
    for trial in range(50):
        lengths = rng.integers(0, 4, rng.integers(1, 9))
        assert segment_ids(lengths).tolist() == np.repeat(np.arange(len(lengths)), lengths).tolist()
        group = np.sort(rng.integers(0, 6, rng.integers(1, 60)))
        score = rng.integers(0, 4, len(group)) if trial % 2 else rng.random(len(group)).round(1)
        assert stable_argsort(score).tolist() == np.argsort(score, kind="stable").tolist()
        idx, rank = smallest_per_group(group, score, 3)
        expected = [i for g in np.unique(group) for i in sorted(np.flatnonzero(group == g),
                                                                 key=lambda i: (score[i], i))[:3]]
        assert idx.tolist() == expected
        assert rank.tolist() == [int((group[idx[:k]] == group[i]).sum()) for k, i in enumerate(idx)]


@pytest.mark.parametrize("shape, dim", [((70, 5000), 1), ((3000, 40), 0), ((9, 4099), 1), ((4099, 9), 0)])
def test_grouped_top_k_matches_torch_topk(shape, dim):
    from analysis.features.weights import top_k

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    for largest in (True, False):
        ref = torch.topk(x, 7, dim=dim, largest=largest)
        vals, ids = top_k(x, 7, dim=dim, largest=largest)
        assert torch.equal(vals, ref.values) and torch.equal(ids, ref.indices)


def test_decoder_neighbors_match_full_cosine_on_wide_tiles():
    from analysis.features.weights import decoder_neighbors

    w = torch.randn(3000, 8, generator=torch.Generator().manual_seed(4))
    ids, cos = decoder_neighbors(w, n=6, block=1024)  # 3 x 3 tiles, the diagonal ones partial
    unit = torch.nn.functional.normalize(w, dim=1)
    full = unit @ unit.T
    full.fill_diagonal_(-2)
    ref = full.topk(6, dim=1)
    torch.testing.assert_close(cos, ref.values)
    assert (ids == ref.indices).float().mean() > 0.999  # rounding may swap near-equal cosines


def test_wide_dictionaries_encode_fewer_contexts_at_a_time():
    from analysis.features.analyze import contexts_per_batch

    assert contexts_per_batch(16, 128, 4_608) == 16
    assert contexts_per_batch(16, 128, 65_536) == 4  # 128 MB of dense activations, not 512 MB
    assert contexts_per_batch(16, 8_192, 2 ** 20) == 1
