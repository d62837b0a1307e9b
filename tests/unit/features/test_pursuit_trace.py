"""The pursuit trace of single tokens: atoms and coefficients as the MP encoder chose them, residual norms by hand."""
import pytest
import torch

from analysis.features.inspector import site_activations, trace_prompt
from analysis.features.pursuit import pursuit_traces
from sae.dictionaries import DictSpec, build_training_sae
from store.errors import InputError

HOOK = "blocks.0.hook_resid_post"
TEXT = "Matching pursuit picks one atom at a time."


@pytest.fixture(scope="module")
def mp():
    torch.manual_seed(1)
    sae = build_training_sae(DictSpec("mp", d_in=64, d_sae=96, k=5))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.3)  # a non-zero bias, so the residual must start from x - b_dec
    return sae


def _naive_pursuit(x, W, b_dec, k):
    """The textbook loop: correlate, take the best atom, subtract its projection (unit-norm atoms)."""
    r, atoms, coeffs = x - b_dec, [], []
    for _ in range(k):
        c = r @ W.T
        j = int(c.argmax())
        a = float(c[j].clamp(min=0))
        if a <= 0:
            break
        atoms.append(j)
        coeffs.append(a)
        r = r - a * W[j]
    return atoms, coeffs


def test_trace_matches_the_encoder_and_a_naive_pursuit(tiny_model, mp):
    _, acts, _ = site_activations(tiny_model, HOOK, TEXT)
    traces = trace_prompt(tiny_model, HOOK, TEXT, mp)
    assert len(traces) == acts.shape[0]
    encoded = mp.encode(acts).detach()  # [T, d_sae] summed coefficients per atom
    W, b = mp.W_dec.detach().double(), mp.b_dec.detach().double()
    for t, trace in enumerate(traces):
        atoms, coeffs = _naive_pursuit(acts[t].double(), W, b, 5)
        assert trace.atoms == atoms
        assert trace.coeffs == pytest.approx(coeffs, abs=1e-5)
        summed = torch.zeros(mp.cfg.d_sae, dtype=torch.float64)
        summed.index_add_(0, torch.tensor(trace.atoms, dtype=torch.long), torch.tensor(trace.coeffs).double())
        assert torch.allclose(summed.float(), encoded[t], atol=1e-5)
        x = acts[t].double()
        for s in range(len(atoms)):  # ||x - (b_dec + sum of the first s+1 terms)||
            recon = b + sum(coeffs[i] * W[atoms[i]] for i in range(s + 1))
            assert trace.residual_norms[s] == pytest.approx(float((x - recon).norm()), rel=1e-5, abs=1e-6)
        assert trace.input_norm == pytest.approx(float((x - b).norm()), rel=1e-6)
        assert trace.stop_reason == "max_steps"


def test_the_last_residual_is_the_reconstruction_error(tiny_model, mp):
    _, acts, _ = site_activations(tiny_model, HOOK, TEXT)
    traces = pursuit_traces(mp, acts)
    errors = (acts - mp.decode(mp.encode(acts))).norm(dim=1).detach()
    assert [t.residual_norms[-1] for t in traces] == pytest.approx(errors.tolist(), rel=1e-4)
    assert all(t.residual_norms[0] <= t.input_norm + 1e-9 for t in traces)  # a step never adds error


def test_other_architectures_are_refused():
    topk = build_training_sae(DictSpec("topk", d_in=64, d_sae=96, k=5))
    with pytest.raises(InputError, match="applies to MP"):
        pursuit_traces(topk, torch.zeros(3, 64))


def test_adaptive_stop_follows_the_residual_threshold_and_repeats():
    from analysis.features.pursuit import PursuitTrace, adaptive_stop

    trace = PursuitTrace(atoms=[5, 2, 9, 2, 7], coeffs=[1.0] * 5, residual_norms=[3.0, 2.0, 1.0, 0.5, 0.2],
                         input_norm=4.0, stop_reason="max_steps")
    assert adaptive_stop(trace, 0.0) == 4  # atom 2 comes back at step 4 (its step is applied)
    assert adaptive_stop(trace, 2.5) == 2
    assert adaptive_stop(trace, 100.0) == 1  # checked after each step, as the encoder does
    no_repeat = PursuitTrace([1, 2, 3], [1.0] * 3, [3.0, 2.0, 1.0], 4.0, "max_steps")
    assert adaptive_stop(no_repeat, 0.5) == 3
    with pytest.raises(InputError, match="finite number >= 0"):
        adaptive_stop(trace, -0.1)
