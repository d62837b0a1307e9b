"""The evaluations' arithmetic on tensors, apart from any model ("Towards Principled Evaluations of Sparse
Autoencoders for Interpretability and Control", Makelov, Lange, Nanda; reference code amakelov/sae).

    LD = logit(IO) - logit(S) at the last token
    sufficiency = |LD_patched - LD_mean| / |LD_clean - LD_mean|     (means over prompts; LD_mean: mean-ablated)
    necessity   = (LD_clean - LD_removed) / (LD_clean - LD_mean)     (1: removing the features hurts like ablating
                                                                      the whole activation; 0: not at all)
    precision, recall, F1 of "feature fires" against "attribute == value", per feature and value
"""
from __future__ import annotations

import torch


def logit_diff(logits: torch.Tensor, io_tokens: torch.Tensor, s_tokens: torch.Tensor) -> torch.Tensor:
    """[n] logit(IO) - logit(S) per row of logits [n, d_vocab]."""
    rows = torch.arange(logits.shape[0])
    return logits[rows, io_tokens] - logits[rows, s_tokens]


def sufficiency(ld_patched: float, ld_clean: float, ld_mean: float) -> float:
    """How much of the clean logit difference (above mean ablation's) a patch keeps: 1 all of it, 0 none."""
    return abs(ld_patched - ld_mean) / max(abs(ld_clean - ld_mean), 1e-9)


def necessity(ld_removed: float, ld_clean: float, ld_mean: float) -> float:
    """How much of the drop that mean ablation causes removing the features causes: 1 all of it, 0 none."""
    gap = ld_clean - ld_mean
    return (ld_clean - ld_removed) / (gap if abs(gap) > 1e-9 else 1e-9)


def f1_scores(active: torch.Tensor, labels: torch.Tensor, n_values: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(precision, recall, F1), each [n_features, n_values], of each feature's firing (active [n, n_features],
    bool) as a detector of each attribute value (labels [n], value indices). A feature that never fires has
    precision 0; F1 is 0 where precision and recall both are."""
    act = active.float()
    onehot = torch.nn.functional.one_hot(labels, n_values).float()  # (n, n_values)
    hits = act.T @ onehot  # (n_features, n_values)
    fired = act.sum(0, keepdim=True).T  # (n_features, 1)
    support = onehot.sum(0, keepdim=True)  # (1, n_values)
    precision = hits / fired.clamp_min(1)
    recall = hits / support.clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return precision, recall, f1


def best_per_value(f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature index [n_values], its F1 [n_values]): the best feature for each value."""
    scores, features = f1.max(dim=0)
    return features, scores


def ranked_features(f1: torch.Tensor, top: int) -> list[list[int]]:
    """Per value, up to `top` features by F1 (best first), leaving out those with F1 0."""
    scores, features = f1.topk(min(top, f1.shape[0]), dim=0)  # (top, n_values)
    return [[int(f) for f, s in zip(features[:, v], scores[:, v]) if s > 0] for v in range(f1.shape[1])]


def choice_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor, candidates: torch.Tensor) -> float:
    """Share of rows where two runs pick the same token among `candidates` (token ids) by argmax."""
    return float((logits_a[:, candidates].argmax(-1) == logits_b[:, candidates].argmax(-1)).float().mean())


def feature_weight(part: torch.Tensor, centered_recon: torch.Tensor) -> torch.Tensor:
    """[n] the weight of a part of a reconstruction: <part, x_hat - x0> / ||x_hat - x0||^2 (x0: the
    reconstruction of no features). Weights of disjoint parts that make up the reconstruction sum to 1."""
    norm2 = (centered_recon * centered_recon).sum(-1).clamp_min(1e-12)
    return (part * centered_recon).sum(-1) / norm2
