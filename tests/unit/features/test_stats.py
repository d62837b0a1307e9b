"""Feature statistics against brute-force computations on small random activations fed in uneven batches."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from analysis.features.codes import code_search
from analysis.features.pursuit import MPStatsConfig, MPStepAccumulator
from analysis.features.stats import FeatureStatsAccumulator, StatsConfig
from analysis.features.streaming import hash_keys
from analysis.features.weights import decoder_neighbors, final_norm_map, logit_effects

N_CTX, CTX_LEN, D_SAE = 24, 20, 48
BATCHES = [(0, 5), (5, 12), (12, 13), (13, 24)]
CFG = StatsConfig(n_examples=6, n_quantiles=4, window=3, hist_bins=8, n_cooc=5)


def make_acts(seed: int = 0, max_first: bool = False) -> torch.Tensor:
    """Sparse, dictionary-like activations: per-feature scale and firing rate, one dead feature."""
    g = torch.Generator().manual_seed(seed)
    rate = torch.rand(D_SAE, generator=g) * 0.3
    scale = torch.exp(torch.randn(D_SAE, generator=g))
    fires = torch.rand(N_CTX, CTX_LEN, D_SAE, generator=g) < rate
    acts = torch.where(fires, torch.rand(N_CTX, CTX_LEN, D_SAE, generator=g) * scale, torch.zeros(()))
    acts[..., 7] = 0.0  # a dead feature
    if max_first:  # every feature reaches its max in the first batch, so bands never move
        acts[0, 0] = acts.amax(dim=(0, 1)) * 1.5
    return acts


def run(acts: torch.Tensor, cfg: StatsConfig = CFG):
    acc = FeatureStatsAccumulator(D_SAE, cfg)
    for start, stop in BATCHES:
        acc.update(acts[start:stop], torch.arange(start, stop) + 1000)
    return acc.finish()


def firings(acts: torch.Tensor, f: int, skip_first: int = 0):
    """Brute force: every (context_id, position, activation) where feature f fires."""
    a = acts[:, skip_first:, f].numpy()
    ctx, pos = np.nonzero(a > 0)
    return ctx + 1000, pos + skip_first, a[ctx, pos]


@pytest.fixture(scope="module")
def acts():
    return make_acts()


@pytest.fixture(scope="module")
def stats(acts):
    return run(acts)


def test_counts_density_mean_max_exact(acts, stats):
    flat = acts.reshape(-1, D_SAE).numpy().astype(np.float64)
    count = (flat > 0).sum(0)
    assert stats.n_tokens == N_CTX * CTX_LEN
    np.testing.assert_array_equal(stats.count, count)
    np.testing.assert_allclose(stats.density, count / (N_CTX * CTX_LEN), rtol=0, atol=0)
    mean = np.where(count > 0, flat.sum(0) / np.maximum(count, 1), 0)
    np.testing.assert_allclose(stats.mean_act, mean, rtol=1e-12)
    np.testing.assert_array_equal(stats.max_act, acts.reshape(-1, D_SAE).amax(0).numpy())
    assert stats.count[7] == 0 and stats.mean_act[7] == 0


def test_histogram_exact_and_log_spaced(acts, stats):
    for f in range(D_SAE):
        _, _, v = firings(acts, f)
        used = stats.hist_count[f] > 0
        lo, hi, cnt = stats.hist_lo[f][used], stats.hist_hi[f][used], stats.hist_count[f][used]
        assert used.sum() <= CFG.hist_bins
        assert cnt.sum() == len(v)
        if len(v) == 0:
            continue
        brute = [((v >= a) & (v < b)).sum() for a, b in zip(lo, hi)]
        np.testing.assert_array_equal(cnt, brute)
        assert lo[0] <= v.min() and v.max() < hi[-1]
        # log-spaced: every bin spans the same ratio, except an underflow bin starting at 0 and the last
        # bin, which ends at the last non-empty fine bin
        inner = lo[:-1] > 0
        ratios = hi[:-1][inner] / lo[:-1][inner]
        np.testing.assert_allclose(ratios, ratios[:1].repeat(len(ratios)), rtol=1e-9)


def test_top_examples_exact(acts, stats):
    n = CFG.n_examples
    for f in range(D_SAE):
        ctx, pos, v = firings(acts, f)
        order = np.argsort(-v, kind="stable")[:n]
        got = stats.top.context_id[f] >= 0
        assert got.sum() == min(n, len(v))
        np.testing.assert_array_equal(stats.top.activation[f][got], v[order])
        assert set(zip(stats.top.context_id[f][got], stats.top.position[f][got])) == \
            set(zip(ctx[order], pos[order]))


def test_example_windows_match_activations(acts, stats):
    width = 2 * CFG.window + 1
    for f in range(0, D_SAE, 5):
        for slot in np.nonzero(stats.top.context_id[f] >= 0)[0]:
            c, p = stats.top.context_id[f, slot] - 1000, stats.top.position[f, slot]
            start = stats.top.window_start[f, slot]
            assert start <= p < start + width and 0 <= start <= CTX_LEN - width
            np.testing.assert_array_equal(stats.top.window[f, slot], acts[c, start:start + width, f].numpy())


def _check_band_samples(acts, stats, exact_bottom_n: bool, cfg: StatsConfig = CFG):
    q, n = cfg.n_quantiles, cfg.n_examples
    for f in range(D_SAE):
        ctx, pos, v = firings(acts, f)
        m = np.float64(stats.max_act[f])
        keys = hash_keys(torch.as_tensor(ctx), torch.as_tensor(pos), torch.full((len(v),), f), cfg.seed).numpy()
        band = np.clip(np.ceil(v.astype(np.float64) * q / m) - 1, 0, q - 1) if len(v) else v
        seen = set()
        for b in range(q):
            got = stats.quantiles.context_id[f, b] >= 0
            s_ctx, s_pos = stats.quantiles.context_id[f, b][got], stats.quantiles.position[f, b][got]
            s_val = stats.quantiles.activation[f, b][got].astype(np.float64)
            assert np.all((b / q * m < s_val) & (s_val <= (b + 1) / q * m)), "sample outside its band"
            pairs = set(zip(s_ctx, s_pos))
            assert len(pairs) == len(s_ctx) and not pairs & seen, "samples must be distinct"
            seen |= pairs
            in_band = np.nonzero(band == b)[0]
            by_key = in_band[np.argsort(keys[in_band])]
            # the sample is a prefix of the band's firings ordered by hash key: uniform, value-blind
            prefix = by_key[:len(pairs)]
            assert pairs == set(zip(ctx[prefix], pos[prefix]))
            if exact_bottom_n:
                assert len(pairs) == min(n, len(in_band))


def test_quantile_samples_in_band_distinct_and_key_prefix(acts, stats):
    _check_band_samples(acts, stats, exact_bottom_n=False)
    filled = (stats.quantiles.context_id >= 0).sum()
    assert filled > 0.5 * D_SAE * CFG.n_quantiles


def test_quantile_samples_exact_bottom_n_when_cells_never_fill():
    # cells large enough to hold every firing: each band's sample must be its n smallest keys exactly,
    # through the grid coarsening (maxes grow across batches) and the final assignment to bands
    cfg = StatsConfig(n_examples=6, n_quantiles=4, window=3, cell_capacity=100.0)
    acts = make_acts(seed=3)
    _check_band_samples(acts, run(acts, cfg), exact_bottom_n=True, cfg=cfg)


def test_quantile_samples_when_max_comes_first():
    acts = make_acts(seed=3, max_first=True)
    _check_band_samples(acts, run(acts), exact_bottom_n=False)


def test_skip_first_leaves_positions_out(acts):
    stats = run(acts, StatsConfig(n_examples=4, n_quantiles=2, window=2, skip_first=2))
    assert stats.n_tokens == N_CTX * (CTX_LEN - 2)
    np.testing.assert_array_equal(stats.count, (acts[:, 2:] > 0).sum((0, 1)).numpy())
    assert stats.top.position[stats.top.context_id >= 0].min() >= 2


def test_cooccurrence_jaccard_matches_brute_force(acts, stats):
    b = (acts.reshape(-1, D_SAE) > 0).double()
    both = (b.T @ b).numpy()
    n = np.diag(both)
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(both > 0, both / (n[:, None] + n[None, :] - both), 0)
    np.fill_diagonal(jac, 0)
    for f in range(D_SAE):
        expected = np.sort(jac[f][jac[f] > 0])[::-1][:CFG.n_cooc]
        ids, vals = stats.cooc_ids[f], stats.cooc_jaccard[f]
        got = ids >= 0
        np.testing.assert_allclose(vals[got], expected, rtol=1e-12)
        np.testing.assert_allclose(jac[f, ids[got]], vals[got], rtol=1e-12)
        assert f not in ids


@pytest.mark.parametrize("uneven", [False, True])
def test_cooccurrence_counts_match_brute_force(uneven, monkeypatch):
    # even L0 takes the padded path, very uneven L0 (one dense token) the ragged one; small chunks
    from analysis.features.cooccurrence import CooccurrenceCounter
    from analysis.features.streaming import find_firings

    monkeypatch.setattr("analysis.features.cooccurrence.PAIR_CHUNK", 97)

    g = torch.Generator().manual_seed(8)
    fires = (torch.rand(2, 100, D_SAE, generator=g) < 0.06).float()
    if uneven:
        fires[0, 3] = 1.0
    counter = CooccurrenceCounter(D_SAE, "cpu")
    fired = find_firings(fires.view(200, D_SAE), ctx_len=100, skip_first=1)
    counter.update(fired.token, fired.feature)
    b = fires[:, 1:].reshape(-1, D_SAE).double()
    np.testing.assert_array_equal(counter.counts[:, :D_SAE].numpy(), (b.T @ b).numpy())


def test_cooccurrence_skipped_above_limit(acts):
    stats = run(acts, StatsConfig(n_examples=2, n_quantiles=2, cooc_max_d_sae=D_SAE - 1))
    assert stats.cooc_ids is None and stats.cooc_jaccard is None


def test_decoder_neighbors_match_full_cosine():
    w = torch.randn(70, 16, generator=torch.Generator().manual_seed(1))
    ids, cos = decoder_neighbors(w, n=5, block=16)
    unit = w / w.norm(dim=1, keepdim=True)
    full = unit @ unit.T
    full.fill_diagonal_(-2)
    ref_vals, ref_ids = full.topk(5, dim=1)
    torch.testing.assert_close(cos, ref_vals)
    assert torch.equal(ids, ref_ids)


def test_logit_effects_blocked_and_through_norm():
    g = torch.Generator().manual_seed(2)
    w_dec, w_u, gain = torch.randn(50, 8, generator=g), torch.randn(8, 30, generator=g), torch.rand(8, generator=g)
    top_ids, top_vals, bot_ids, bot_vals = logit_effects(w_dec, w_u, lambda d: d * gain, top=4, block=7)
    full = (w_dec * gain) @ w_u
    ref_top, ref_bot = full.topk(4, dim=1), full.topk(4, dim=1, largest=False)
    torch.testing.assert_close(top_vals, ref_top.values)
    torch.testing.assert_close(bot_vals, ref_bot.values)
    assert torch.equal(top_ids, ref_top.indices) and torch.equal(bot_ids, ref_bot.indices)


def test_final_norm_map_uses_linear_part_only():
    w = torch.tensor([2.0, 3.0])
    rms = SimpleNamespace(cfg=SimpleNamespace(normalization_type="RMS"), ln_final=SimpleNamespace(w=w))
    ln = SimpleNamespace(cfg=SimpleNamespace(normalization_type="LN"), ln_final=SimpleNamespace(w=w))
    pre = SimpleNamespace(cfg=SimpleNamespace(normalization_type="RMSPre"), ln_final=SimpleNamespace())
    d = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(final_norm_map(rms)(d), torch.tensor([[2.0, 9.0]]))
    torch.testing.assert_close(final_norm_map(ln)(d), torch.tensor([[-2.0, 3.0]]))
    assert final_norm_map(pre) is None


def _mp_brute(atoms: np.ndarray, steps: np.ndarray, d_sae: int, k: int):
    hist = np.zeros((d_sae, k), dtype=np.int64)
    pairs: Counter = Counter()
    for row, n in zip(atoms, steps):
        for t in range(n):
            if row[t] < 0:
                continue
            hist[row[t], t] += 1
            for s in range(t):
                if row[s] >= 0 and row[s] != row[t]:
                    pairs[(row[t], row[s])] += 1
    return hist, pairs


@pytest.mark.parametrize("dense_max", [4096, 0])
def test_mp_steps_and_parents_match_brute_force(dense_max):
    g = torch.Generator().manual_seed(4)
    d_sae, k, n_parents = 30, 5, 3
    acc = MPStepAccumulator(d_sae, k, MPStatsConfig(n_parents=n_parents, dense_max_d_sae=dense_max))
    all_atoms, all_steps = [], []
    for batch in range(3):
        atoms = torch.randint(0, d_sae // 2 if batch else d_sae, (40, k), generator=g)  # skewed: ties rarer
        atoms[0, 2] = -1
        steps = torch.randint(1, k + 1, (40,), generator=g)
        acc.update(atoms, steps)
        all_atoms.append(atoms.numpy()), all_steps.append(steps.numpy())
    out = acc.finish()
    hist, pairs = _mp_brute(np.concatenate(all_atoms), np.concatenate(all_steps), d_sae, k)
    np.testing.assert_array_equal(out.step_counts, hist)
    assert out.parents_exact
    for child in range(d_sae):
        ranked = sorted(((-c, p) for (ch, p), c in pairs.items() if ch == child))[:n_parents]
        got = out.parent_ids[child] >= 0
        assert list(out.parent_ids[child][got]) == [p for _, p in ranked]
        assert list(out.parent_counts[child][got]) == [-c for c, _ in ranked]


def test_mp_sparse_counter_prunes_when_full():
    acc = MPStepAccumulator(40, 4, MPStatsConfig(dense_max_d_sae=0, max_pairs=50, keep_per_child=2))
    acc.update(torch.randint(0, 40, (200, 4), generator=torch.Generator().manual_seed(5)),
               torch.full((200,), 4))
    out = acc.finish()
    assert not out.parents_exact and len(acc.keys) <= 40 * 2
    assert (out.parent_counts[:, 0] > 0).any()


def test_code_search_matches_brute_force():
    g = torch.Generator().manual_seed(6)
    words = ["cat", "dog", " the", "Cat", "7", "42"]
    texts = [words[i] for i in torch.randint(0, len(words), (300,), generator=g).tolist()]
    codes = torch.randint(0, 25, (300, 3), generator=g)
    is_digit = torch.tensor([t.isdigit() for t in texts])
    codes[is_digit, 0] = 99  # code 99 fires exactly on numbers
    result = code_search(texts, codes, r"^\d+$")
    assert result[0].code == 99 and result[0].precision == 1.0 and result[0].recall == 1.0
    match = np.array([t.isdigit() for t in texts])
    for hit in result:
        active = (codes.numpy() == hit.code).any(axis=1)
        assert hit.precision == pytest.approx((active & match).sum() / active.sum())
        assert hit.recall == pytest.approx((active & match).sum() / match.sum())
        assert hit.recall > 0.01
    assert [h.precision for h in result] == sorted((h.precision for h in result), reverse=True)


def test_code_search_rejects_bad_regex():
    with pytest.raises(ValueError, match="regex does not compile"):
        code_search(["a"], torch.zeros((1, 1), dtype=torch.long), "(unclosed")


def test_update_rejects_wrong_shapes():
    acc = FeatureStatsAccumulator(D_SAE, CFG)
    with pytest.raises(ValueError):
        acc.update(torch.zeros(2, 4, D_SAE + 1), torch.arange(2))
    with pytest.raises(ValueError):
        StatsConfig(n_examples=0)


def test_feature_tables_round_trip_through_the_store(acts, stats):
    from analysis.features.tables import feature_tables
    from store import connect
    from store.features import write_feature_stats
    from store.queries import feature_card

    g = torch.Generator().manual_seed(7)
    w_dec, w_u = torch.randn(D_SAE, 8, generator=g), torch.randn(8, 12, generator=g)
    mp = MPStepAccumulator(D_SAE, 3)
    mp.update(torch.randint(0, D_SAE, (20, 3), generator=g), torch.full((20,), 3))
    tables = feature_tables(stats, "c", decoder_norm=w_dec.norm(dim=1), neighbors=decoder_neighbors(w_dec, 4),
                            logits=logit_effects(w_dec, w_u, top=3), vocab=[f"t{i}" for i in range(12)],
                            mp=mp.finish())
    n_top = int((stats.top.context_id >= 0).sum())
    n_band = int((stats.quantiles.context_id >= 0).sum())
    assert tables["feature_examples"].num_rows == n_top + n_band
    assert tables["feature_histograms"].num_rows == int((stats.hist_count > 0).sum())
    con = connect(":memory:")
    write_feature_stats(con, "d", "c", tables, n_tokens=stats.n_tokens, model="m")
    f = int(np.argmax(stats.count))
    card = feature_card(con, "d", f)
    assert card.count == stats.count[f] and card.max_act == pytest.approx(float(stats.max_act[f]))
    assert [e.activation for e in card.top_examples] == pytest.approx(
        stats.top.activation[f][stats.top.context_id[f] >= 0].tolist())
    assert sum(c for _, _, c in card.histogram) == stats.count[f]
    assert [r.text for r in card.promoted][:1] == [f"t{int(logit_effects(w_dec, w_u, top=1)[0][f, 0])}"]
    assert len(card.cooccurring) == int((stats.cooc_ids[f] >= 0).sum())
