"""What an intervention acts on: a dictionary feature (SAE family or MP atom), a codebook code, a raw direction.

Every target works on flattened rows x [n, d_in] (hook_z heads flattened head-major) and offers
read(x) -> [n] (the feature's activation), add(x, amount), clamp(x, value) and ablate(x), and from
AlongDirection the geometric edits on the unit direction d: rescale(x, factor) and cap(x, value).
clamp and ablate are SAE splices with the error term: x' = decode(edited codes) + (x - decode(codes)), so
only the edited feature's contribution changes. For a linear decoder that is x + (value - a) * row, computed
that way so that clamping a feature to its own value returns x bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae.dictionaries import arch_of
from sae.dictionaries.codebook import layer_norm_with_stats
from store.errors import InputError

_RUNTIME_NORMS = ("constant_norm_rescale", "layer_norm")
"""SAELens normalisations whose decode depends on state left by encode: no exact splice is possible."""


class SteerDictionary:
    """A loaded dictionary to steer with: its SAELens module, hook, and per-feature max activations."""

    def __init__(self, name: str, sae, hook: str | None = None, max_acts: dict[int, float] | None = None,
                 model: str = ""):
        self.name, self.sae, self.model = name, sae, model
        self.hook = hook or sae.cfg.metadata.hook_name or ""
        self.architecture = arch_of(sae)
        self.max_acts = dict(max_acts or {})
        """Typical max activation per feature from the store (features.max_act); empty when not analysed."""
        norm = getattr(sae.cfg, "normalize_activations", "none")
        if norm in _RUNTIME_NORMS:
            raise InputError(f"dictionary {name!r} normalises activations at run time ({norm}); fold it "
                             "before steering")
        self._targets: dict[int, object] = {}

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def check_feature(self, feature: int) -> None:
        if not 0 <= feature < self.d_sae:
            raise InputError(f"feature {feature} is not in dictionary {self.name!r} (features 0..{self.d_sae - 1})")

    def target(self, feature: int):
        """The FeatureTarget or CodeTarget for one feature (built once, reused across runs)."""
        self.check_feature(feature)
        if feature not in self._targets:
            kind = CodeTarget if self.architecture.has_codes else FeatureTarget
            self._targets[feature] = kind(self, feature)
        return self._targets[feature]

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """[n, d_sae] feature activations of rows x [n, d_in]."""
        return self.sae.encode(x.to(self.sae.W_dec.dtype))


class AlongDirection:
    """Edits of the component of x along a target's unit direction `self.unit` (the orthogonal and cap modes).

    Both leave the orthogonal part x - (x.d)d as it is, and a row they do not change comes back bit for bit
    (rescale by 1, a projection already under the cap).
    """

    unit: Tensor

    def projection(self, x: Tensor) -> Tensor:
        """[n] x.d for rows x [n, d_in]."""
        return x @ self.unit.to(x.dtype)

    def rescale(self, x: Tensor, factor: float) -> Tensor:
        """x' = (I - dd^T)x + factor (dd^T)x: the component along d scaled by `factor`."""
        return x + ((factor - 1.0) * self.projection(x))[:, None] * self.unit.to(x.dtype)

    def cap(self, x: Tensor, value: float) -> Tensor:
        """x' = x - max(0, x.d - value) d: the component along d at most `value`."""
        excess = (self.projection(x) - value).clamp(min=0.0)
        return x - excess[:, None] * self.unit.to(x.dtype)


class FeatureTarget(AlongDirection):
    """A feature of an SAE-family dictionary (relu, topk, batchtopk, jumprelu) or an MP atom (its coefficient)."""

    def __init__(self, dictionary: SteerDictionary, feature: int):
        self.dictionary, self.feature, self.hook = dictionary, feature, dictionary.hook
        self.label = f"{dictionary.name}:{feature}"
        sae = dictionary.sae
        with torch.no_grad():
            codes = torch.zeros(2, dictionary.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
            codes[1, feature] = 1.0
            out = sae.decode(codes)
        # decode(e_i) - decode(0): the row as the decoder applies it (b_dec cancels; decoder-norm rescaling kept)
        self.row = (out[1] - out[0]).detach()
        self.norm = float(self.row.norm())
        self.unit = self.row / self.norm if self.norm > 0 else self.row

    def read(self, x: Tensor) -> Tensor:
        return self.dictionary.encode(x)[:, self.feature].to(x.dtype)

    def add(self, x: Tensor, amount: float | Tensor) -> Tensor:
        return x + amount * self.unit.to(x.dtype)

    def clamp(self, x: Tensor, value: float | Tensor) -> Tensor:
        delta = value - self.read(x)  # exactly 0 where the feature already has that value
        return x + delta[:, None] * self.row.to(x.dtype)

    def ablate(self, x: Tensor) -> Tensor:
        return self.clamp(x, 0.0)


class CodeTarget(AlongDirection):
    """A code of a codebook dictionary: steering switches the code into or out of the chosen top-k set."""

    def __init__(self, dictionary: SteerDictionary, code: int):
        self.dictionary, self.feature, self.hook = dictionary, code, dictionary.hook
        self.label = f"{dictionary.name}:{code}"
        sae = dictionary.sae
        self.k = int(sae.cfg.k)
        self.codes = sae.W_dec.detach()  # [d_sae, d_in], LayerNorm space
        self.unit_codes = F.normalize(self.codes, dim=-1)
        self.norm = float(self.codes[code].norm())
        self.unit = self.unit_codes[code]

    def _normalized(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(h, sigma): LayerNorm'd rows and their std, as the codebook's encoder computes them."""
        h, _, sigma = layer_norm_with_stats(self.dictionary.sae.process_sae_in(x))
        return h, sigma

    def ranked(self, x: Tensor, extra: int = 0) -> Tensor:
        """[n, k + extra] codes by cosine similarity to LayerNorm(x), best first (the first k are chosen)."""
        h, _ = self._normalized(x)
        return (h @ self.unit_codes.T).topk(min(self.k + extra, self.codes.shape[0]), dim=-1).indices

    def read(self, x: Tensor) -> Tensor:
        """1/k where the code is chosen, else 0 (what the codebook's encode reports)."""
        return (self.ranked(x) == self.feature).any(dim=1).to(x.dtype) / self.k

    def add(self, x: Tensor, amount: float | Tensor) -> Tensor:
        # amount is in LayerNorm units: scaled by each row's std, as the codebook's own output is
        _, sigma = self._normalized(x)
        return x + amount * sigma * self.unit.to(x.dtype)

    def edited_codes(self, x: Tensor, force: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(chosen [n, k], edited [n, k], sigma [n, 1]).

        force: the lowest-scoring chosen code is replaced by this one where it is not chosen already
        (the Codebook Features paper's steering). Otherwise the code is taken out of the set and the next
        best code takes its place: the top k the codebook would choose without it.
        """
        if not force and self.k >= self.codes.shape[0]:
            raise InputError(f"cannot ablate a code of {self.dictionary.name!r}: k equals the codebook size")
        ranked = self.ranked(x, extra=0 if force else 1)
        chosen = ranked[:, :self.k]
        if force:
            edited = chosen.clone()
            edited[~(chosen == self.feature).any(dim=1), self.k - 1] = self.feature
        else:
            # a stable sort on "is this code" moves it last and keeps the others in rank order
            order = (ranked == self.feature).to(torch.int8).argsort(dim=1, stable=True)
            edited = ranked.gather(1, order)[:, :self.k]
        return chosen, edited, self._normalized(x)[1]

    def _splice(self, x: Tensor, force: bool) -> Tensor:
        chosen, edited, sigma = self.edited_codes(x, force)
        delta = self.codes[edited].mean(dim=1) - self.codes[chosen].mean(dim=1)  # 0 where the set is unchanged
        return x + (delta * sigma).to(x.dtype)

    def clamp(self, x: Tensor, value: float | Tensor) -> Tensor:
        """A code is on or off: a positive value forces it into the set, zero or less takes it out
        (value may be one number or one per row)."""
        on = torch.as_tensor(value, device=x.device) > 0
        if on.dim() == 0:
            return self._splice(x, force=bool(on))
        return torch.where(on[:, None], self._splice(x, force=True), self._splice(x, force=False))

    def ablate(self, x: Tensor) -> Tensor:
        return self._splice(x, force=False)


class DirectionTarget(AlongDirection):
    """A raw direction at a hook: a user vector or a decoder row copied out of a dictionary."""

    def __init__(self, vector: Tensor, hook: str, label: str = ""):
        self.hook, self.feature = hook, None
        self.label = label or f"direction@{hook}"
        self.vector = vector.detach()
        self.norm = float(self.vector.norm())
        self.unit = self.vector / self.norm

    def read(self, x: Tensor) -> Tensor:
        """The projection of each row on the unit direction."""
        return self.projection(x)

    def add(self, x: Tensor, amount: float | Tensor) -> Tensor:
        return x + amount * self.unit.to(x.dtype)

    def clamp(self, x: Tensor, value: float | Tensor) -> Tensor:
        """Set the projection on the direction to `value`, leaving the orthogonal part as it is."""
        return x + (value - self.read(x))[:, None] * self.unit.to(x.dtype)

    def ablate(self, x: Tensor) -> Tensor:
        return self.clamp(x, 0.0)
