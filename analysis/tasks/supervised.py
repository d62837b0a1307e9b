"""The supervised dictionary of a task: activations explained by conditional means of its known attributes.

    a ~ u_bias + sum_f u_f[value_f]        u_bias = E[a],  u_f[v] = E[a - u_bias | f = v]

(the paper's "independent" mean codes). Each u_f[v] is one feature: a prompt's code is the value of each
attribute, so it is the reference a learned dictionary is measured against.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SupervisedDictionary:
    bias: torch.Tensor
    """[d_in] the mean activation."""
    codes: dict[str, torch.Tensor]
    """Per attribute: [n_values, d_in] the mean of the centred activations of the prompts with each value
    (zero for a value no prompt has)."""

    @classmethod
    def fit(cls, acts: torch.Tensor, attributes: dict[str, torch.Tensor], n_values: dict[str, int]
            ) -> SupervisedDictionary:
        """Mean codes of acts [n, d_in] given each prompt's value (attributes[name]: [n] indices)."""
        bias = acts.mean(0)
        centred = acts - bias
        codes = {}
        for name, values in attributes.items():
            onehot = torch.nn.functional.one_hot(values, n_values[name]).to(acts.dtype)  # (n, n_values)
            codes[name] = (onehot.T @ centred) / onehot.sum(0).clamp_min(1).unsqueeze(1)
        return cls(bias, codes)

    def part(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """[n, d_in] attribute `name`'s code for each value."""
        return self.codes[name][values]

    def reconstruct(self, attributes: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, d_in] u_bias + the code of every attribute."""
        return self.bias + sum(self.part(name, values) for name, values in attributes.items())
