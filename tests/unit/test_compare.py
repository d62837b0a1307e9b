"""analysis.compare: decoder-cosine matching of two dictionaries (Hungarian and greedy)."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from analysis.compare import compare_dictionaries, decoder_directions, match_directions


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def _random_sae(d_in=32, d_sae=96, seed=0):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))


@pytest.mark.parametrize("method", ["hungarian", "greedy"])
def test_a_permuted_copy_is_matched_exactly(method):
    sae = _random_sae()
    perm = torch.randperm(sae.cfg.d_sae, generator=torch.Generator().manual_seed(1))
    dirs = decoder_directions(sae)
    m = match_directions(dirs, dirs[perm] * 3.0 / 3.0, method)
    assert m.method == method
    # feature i of A is row i; B's row j is A's feature perm[j], so A's i pairs with j where perm[j] == i
    assert np.array_equal(m.a, np.arange(sae.cfg.d_sae))
    assert np.array_equal(perm[m.b].numpy(), m.a)
    assert np.allclose(m.cos, 1.0, atol=1e-5) and np.allclose(m.best_a, 1.0, atol=1e-5)


def test_hungarian_is_optimal_and_one_to_one():
    g = torch.Generator().manual_seed(0)
    a, b = _unit(torch.randn(40, 16, generator=g)), _unit(torch.randn(55, 16, generator=g))
    m = match_directions(a, b, "hungarian")
    cos = (a @ b.T).numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    assert len(m.a) == 40 and len(set(m.b.tolist())) == 40
    assert m.cos.sum() == pytest.approx(cos[rows, cols].sum(), rel=1e-6)
    assert np.allclose(m.best_b, cos.max(axis=0)) and m.n_b == 55
    # B has 15 more features than A: they have no partner whatever the threshold
    assert (m.partners("b") == -1).sum() == 15
    assert len(m.unmatched("b", threshold=-1.0)) == 15


def test_greedy_is_one_to_one_and_close_to_optimal_on_noisy_copies():
    g = torch.Generator().manual_seed(0)
    a = _unit(torch.randn(300, 24, generator=g))
    b = _unit(a[torch.randperm(300, generator=g)] + 0.1 * torch.randn(300, 24, generator=g))
    greedy, best = match_directions(a, b, "greedy"), match_directions(a, b, "hungarian")
    assert len(set(greedy.a.tolist())) == len(greedy.a) and len(set(greedy.b.tolist())) == len(greedy.b)
    assert np.array_equal(greedy.partners("a"), best.partners("a"))
    assert np.allclose(greedy.best_a, best.best_a, atol=1e-6) and np.allclose(greedy.best_b, best.best_b, atol=1e-6)


def test_greedy_chunks_agree_with_one_chunk():
    from analysis.compare import _greedy

    g = torch.Generator().manual_seed(3)
    a, b = _unit(torch.randn(70, 8, generator=g)), _unit(torch.randn(50, 8, generator=g))
    whole, chunked = _greedy(a, b, chunk=1000), _greedy(a, b, chunk=7)
    assert np.array_equal(whole.a, chunked.a) and np.array_equal(whole.b, chunked.b)
    assert np.allclose(whole.best_b, chunked.best_b)


def test_unmatched_lists_worst_first_below_threshold():
    a = torch.eye(4)
    b = _unit(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 0], [0, 0, 0, -1.0]]))
    m = match_directions(a, b, "hungarian")
    assert m.partners("a")[0] == 0 and m.partner_cos("a")[0] == pytest.approx(1.0)
    low = m.unmatched("a", threshold=0.9)
    assert 0 not in low.tolist() and len(low) == 3
    assert np.isnan(m.partner_cos("a")[low[0]]) or m.partner_cos("a")[low[0]] <= m.partner_cos("a")[low[-1]]


def test_dictionaries_of_our_architectures_compare(seed):
    from sae.dictionaries import DictSpec, build_training_sae

    mp = build_training_sae(DictSpec("mp", d_in=32, d_sae=64, k=4))
    codebook = build_training_sae(DictSpec("codebook", d_in=32, d_sae=48, k=2))
    m = compare_dictionaries(mp, codebook)
    assert len(m.a) == 48 and m.n_a == 64 and m.n_b == 48
    with pytest.raises(ValueError, match="same site"):
        compare_dictionaries(mp, _random_sae(d_in=16))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown matching method"):
        match_directions(torch.eye(2), torch.eye(2), "fastest")
