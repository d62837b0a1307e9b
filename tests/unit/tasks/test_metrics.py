"""The evaluations' arithmetic against hand computations."""
import pytest
import torch

from analysis.tasks import SupervisedDictionary
from analysis.tasks import metrics as m


def test_f1_on_a_hand_built_activation_pattern():
    labels = torch.tensor([0, 0, 1, 1])  # prompts 0, 1 have value 0; prompts 2, 3 value 1
    active = torch.tensor([[1, 1, 1, 0],   # columns: features 0..3
                           [1, 0, 1, 0],
                           [0, 1, 1, 0],
                           [0, 0, 0, 0]], dtype=torch.bool)
    precision, recall, f1 = m.f1_scores(active, labels, 2)
    # feature 0 fires exactly on value 0; feature 1 on one prompt of each; feature 2 on three; feature 3 never
    assert precision[:, 0].tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.0])
    assert recall[:, 0].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert f1[:, 0].tolist() == pytest.approx([1.0, 0.5, 0.8, 0.0])
    assert precision[:, 1].tolist() == pytest.approx([0.0, 0.5, 1 / 3, 0.0])
    assert recall[:, 1].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.0])
    assert f1[:, 1].tolist() == pytest.approx([0.0, 0.5, 0.4, 0.0])
    features, best = m.best_per_value(f1)
    assert features.tolist() == [0, 1] and best.tolist() == pytest.approx([1.0, 0.5])
    assert m.ranked_features(f1, 3) == [[0, 2, 1], [1, 2]]  # F1 0 left out


def test_sufficiency_and_necessity_normalise_against_mean_ablation():
    clean, mean = 5.0, 1.0
    assert m.sufficiency(5.0, clean, mean) == pytest.approx(1.0)  # keeps everything
    assert m.sufficiency(1.0, clean, mean) == pytest.approx(0.0)  # no better than the mean
    assert m.sufficiency(3.0, clean, mean) == pytest.approx(0.5)
    assert m.necessity(1.0, clean, mean) == pytest.approx(1.0)  # removing hurts like ablating everything
    assert m.necessity(5.0, clean, mean) == pytest.approx(0.0)
    assert m.necessity(4.0, clean, mean) == pytest.approx(0.25)


def test_logit_difference_and_choice_agreement():
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.5], [2.0, 0.0, 0.0, 4.0]])
    assert m.logit_diff(logits, torch.tensor([1, 3]), torch.tensor([2, 0])).tolist() == [2.0, 2.0]
    other = torch.tensor([[0.0, 0.0, 1.0, 0.5], [2.0, 0.0, 0.0, 4.0]])
    # among tokens 1 and 2: row 0 picks 1 vs 2 (disagree), row 1 picks 1 vs 1 (0 == 0: the first)
    assert m.choice_agreement(logits, other, torch.tensor([1, 2])) == 0.5


def test_feature_weights_of_a_partition_sum_to_one():
    a, b = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, -1.0, 3.0]])
    recon = a + b
    assert float(m.feature_weight(a, recon) + m.feature_weight(b, recon)) == pytest.approx(1.0)
    assert float(m.feature_weight(a, recon)) == pytest.approx((1 + 2) / (1 + 1 + 9))


def test_supervised_mean_codes_recover_an_additive_design():
    # a = [1, 0] + io * [2, 0] + s * [0, 4] over the full 2 x 2 design
    io, s = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    acts = torch.tensor([[1.0, 0.0]]) + io[:, None] * torch.tensor([2.0, 0.0]) + s[:, None] * torch.tensor([0.0, 4.0])
    sup = SupervisedDictionary.fit(acts, {"io": io, "s": s}, {"io": 3, "s": 2})
    assert sup.bias.tolist() == [2.0, 2.0]
    assert sup.codes["io"].tolist() == [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]  # value 2: no prompt, zero code
    assert sup.codes["s"].tolist() == [[0.0, -2.0], [0.0, 2.0]]
    assert torch.allclose(sup.reconstruct({"io": io, "s": s}), acts)
