"""The evaluation on the tiny model: a perfect reconstruction is sufficient (1), the mean is not (0), every
architecture's feature parts add up to its reconstruction."""
import pytest
import torch

from analysis.tasks import build_ioi, evaluate_site
from analysis.tasks import codes as dict_codes
from analysis.tasks.site import last_acts
from tests.factories import TINY_D_MODEL, TINY_HOOK, TINY_IOI, dict_spec

PROMPTS, FIT = 24, 48


def _topk(d_sae: int, k: int):
    from sae.dictionaries import build_training_sae

    torch.manual_seed(0)
    return build_training_sae(dict_spec("topk", d_sae=d_sae, k=k)).eval()


def perfect_dictionary():
    """TopK over [x, -x]: relu keeps each coordinate on one side, decode subtracts them back: x_hat = x."""
    sae = _topk(2 * TINY_D_MODEL, TINY_D_MODEL)
    eye = torch.eye(TINY_D_MODEL)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def mean_dictionary(mean: torch.Tensor):
    """Decodes every input to `mean`: no feature fires (b_enc -1, W_enc 0), b_dec = mean."""
    sae = _topk(16, 4)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_dec.copy_(mean)
    return sae


def _evaluate(model, sae, **kw):
    return evaluate_site(model, TINY_HOOK, sae, "d", prompts=PROMPTS, fit_prompts=FIT, seed=0, **kw, **TINY_IOI)


def test_a_perfect_reconstruction_is_sufficient_and_removing_it_is_necessary(tiny_model, one_thread):
    x = last_acts(tiny_model, build_ioi(tiny_model, PROMPTS, 0, **TINY_IOI), TINY_HOOK)
    sae = perfect_dictionary()
    assert torch.allclose(dict_codes.encode(sae, x).recon, x, atol=1e-5)  # the premise: x_hat = x
    result = _evaluate(tiny_model, sae)
    row, check = result["dictionaries"]["d"], result["model_check"]
    assert abs(check["logit_diff"] - check["logit_diff_mean_ablated"]) > 1e-3  # the normalisation is defined
    assert row["sufficiency_all"] == pytest.approx(1.0, abs=1e-3)
    assert row["logit_diff_kept_all"] == pytest.approx(check["logit_diff"], abs=1e-4)
    # a - x_hat + E[x_hat] = E[a]: removing everything is mean ablation
    assert row["necessity_all"] == pytest.approx(1.0, abs=1e-3)


def test_the_mean_is_not_sufficient(tiny_model, one_thread):
    fit = build_ioi(tiny_model, FIT, 1, **TINY_IOI)  # the fit prompts take seed + 1
    result = _evaluate(tiny_model, mean_dictionary(last_acts(tiny_model, fit, TINY_HOOK).mean(0)))
    row = result["dictionaries"]["d"]
    assert row["sufficiency_all"] == pytest.approx(0.0, abs=1e-3)
    assert row["necessity_all"] == pytest.approx(0.0, abs=1e-3)  # a - x_hat + E[x_hat] = a: nothing removed
    assert row["edit_magnitude"] == 0.0 and row["task_features"] == 0  # nothing fires: nothing to edit
    # an edit that changes nothing scores what the clean run's agreement with the patch is
    assert row["edit_accuracy"] == result["model_check"]["edit_accuracy_unedited"]


@pytest.mark.parametrize("arch", ["topk", "relu", "mp", "codebook"])
def test_every_architecture_parts_add_up_and_evaluates(tiny_model, one_thread, arch):
    from sae.dictionaries import build_training_sae

    torch.manual_seed(0)
    sae = build_training_sae(dict_spec(arch, d_sae=96, k=4)).eval()
    x = last_acts(tiny_model, build_ioi(tiny_model, PROMPTS, 0, **TINY_IOI), TINY_HOOK)
    codes = dict_codes.encode(sae, x)
    everything = dict_codes.part(sae, x, codes, torch.ones(codes.z.shape[1], dtype=torch.bool))
    assert torch.allclose(codes.base + everything, codes.recon, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(codes.recon, sae(x), atol=1e-4)  # the dictionary's own reconstruction
    result = _evaluate(tiny_model, sae)
    row = result["dictionaries"]["d"]
    assert set(row["interpretability"]) == {"io", "s", "order"}
    assert all(0 <= v["f1"] <= 1 for v in row["interpretability"].values())
    assert 0 <= row["edit_accuracy"] <= 1 and 0 < row["task_features"] <= 2 * (8 + 8 + 2)


def test_a_result_is_saved_per_task_site_seed_and_edit_size(tmp_path):
    import json

    from analysis.tasks import save_result

    result = {"task": "ioi", "hook": TINY_HOOK, "seed": 3, "edit_features": 2, "dictionaries": {}}
    path = save_result(tmp_path / "task_evals", result)
    assert path == tmp_path / "task_evals" / f"ioi-{TINY_HOOK}-seed3-edit2.json"
    assert json.loads(path.read_text()) == result
    again = save_result(tmp_path / "task_evals", result | {"seconds": 1.0})  # a rerun replaces it
    assert again == path and json.loads(path.read_text())["seconds"] == 1.0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
