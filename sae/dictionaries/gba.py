"""Group Bias Adaptation (GBA, "Taming Polysemanticity in LLMs", arXiv 2506.14002): a ReLU SAE without a
sparsity penalty whose encoder biases are set by a rule instead of by gradients.

The features are split into `groups` equal groups; group g aims at the activation frequency
target_high * (target_low / target_high) ** (g / (groups - 1)) (geometric, the first group the most frequent).
The loss is the reconstruction error alone. The biases are buffers, not parameters, so no optimizer ever sees
them; every `update_every` steps, from the firing counts and peak pre-activations of the steps since the last
update (running sums per feature, not a buffer of activations; for a group whose target that window is too short
to count, of the last few windows: see below):

    p_m > target of m's group:  b_m <- max(b_m - gamma * r_m, -1)      (r_m: m's peak pre-activation)
    p_m < eps:                  b_m <- min(b_m + gamma * rbar_g, 0)    (rbar_g: mean positive peak of the group)

Algorithm 1 of the paper writes the clips as min / max the other way round; a reviewer notes the slip, and the
range [-1, 0] is what the rule means. That range is on the scale of a unit-norm direction's pre-activation on
unit-norm inputs, so the record asks for inputs of mean norm 1 (`unit_norm_inputs`) and the encoder's columns
are kept at unit norm after each step (the paper's neurons are unit directions). The model is tied as in the
paper: decoder row m is a_m * w_m (Adam trains w and a). b_pre (SAELens' b_dec, subtracted before the encoder and
added back after the decoder) is fixed at the geometric median of the initial sample, not trained: its gradient
through the encoder is a gradient on every threshold w_m . b_pre - b_m, and with no sparsity term the loss always
wants those lower; on the demo cache Adam moved b_pre by 0.4 (the rows lie about 0.6 from their median) within
60 steps and L0 went from 67 to over 1,000 while the rule, a step of gamma * r_m per window, could not follow.

Not in the paper: a window of `update_every` steps can be too short for a rare target (1,024 tokens hold one firing
on average at 0.001): then "p_m > target" means "fired twice", "p_m < eps" means "never fired", and the rule
settles where those are equally likely, above the target (about 1.15 x it at one expected firing, steps alike) and
with a wide spread; one pass over the demo cache left 41% of the 0.001 group above 1.5 x it. Longer windows for
every group leave too few updates to follow the encoder as it learns (91% and 80% within 1.5 x at 10 and 20 steps,
against 94% at 1). So each feature's counts and peaks of the last MAX_WINDOWS windows are kept, and every update
counts a group's frequency over as many of them as hold `min_fires` firings at its target (a sliding window, still
updated every window; a group whose window is long enough uses the last one alone, as in the paper). After a bias
step the kept peaks are shifted by it, to what they would be with the new bias. Also not in the paper:
`quantile_init` starts every bias at its target (minus the quantile of the initial pre-activations), so that a
single pass over a small cache already holds the targets; with it off the biases start at 0 as in the paper. The
saved dictionary is a plain SAELens `standard` SAE (the biases are ordinary weights there); its metadata records
the options it was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from sae_lens.saes.sae import SAEConfig, TrainingSAEConfig, TrainStepInput, TrainStepOutput
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig, StandardTrainingSAE
from torch import Tensor

from sae.dictionaries.registry import Architecture, Option
from store.errors import InputError

MAX_WINDOWS = 32
"""Past windows kept per feature (their firing counts and peaks) for the rare groups' frequencies."""
OPTIONS = (
    Option("groups", 10, "groups of features, each with its own target frequency"),
    Option("target_high", 0.1, "target frequency of the first (most frequent) group"),
    Option("target_low", 1e-3, "target frequency of the last group; the others lie geometrically between"),
    Option("gamma", 0.01, "bias step, a share of the peak pre-activation"),
    Option("update_every", 50, "steps between bias updates (the window that frequencies are counted over)"),
    Option("eps", 1e-6, "a feature firing less often than this in a window has its bias raised"),
    Option("min_fires", 16.0, f"a group's frequency is counted over as many of the last windows (at most "
                              f"{MAX_WINDOWS}) as its target needs to fire this often on average (0: the last "
                              "window alone)"),
    Option("quantile_init", True, "start each bias at its target's quantile of the initial pre-activations "
                                  "(false: at 0, as in the paper)"),
)
"""GBA's options (`--option NAME=VALUE`); the defaults follow the paper (K >= 10 groups, gamma 0.01, T = 50)."""
_DEFAULTS = {option.name: option.default for option in OPTIONS}


def check_gba_options(options: Mapping[str, Any], d_sae: int | None) -> None:
    """InputError (one line) for GBA options that cannot hold."""
    groups = options["groups"]
    if groups < 1:
        raise InputError(f"--option groups must be at least 1 (got {groups})")
    if d_sae is not None and groups > d_sae:
        raise InputError(f"--option groups ({groups}) cannot exceed the number of features ({d_sae})")
    for name in ("target_high", "target_low"):
        if not 0 < options[name] <= 1:
            raise InputError(f"--option {name} is a frequency: it must be in (0, 1] (got {options[name]})")
    if options["target_low"] > options["target_high"]:
        raise InputError(f"--option target_low ({options['target_low']}) must not exceed target_high "
                         f"({options['target_high']})")
    if not options["gamma"] > 0:
        raise InputError(f"--option gamma must be positive (got {options['gamma']})")
    if options["update_every"] < 1:
        raise InputError(f"--option update_every must be at least 1 (got {options['update_every']})")
    if not 0 <= options["eps"] <= 1:
        raise InputError(f"--option eps is a frequency: it must be in [0, 1] (got {options['eps']})")
    if not options["min_fires"] >= 0:
        raise InputError(f"--option min_fires must be at least 0 (got {options['min_fires']})")


def group_targets(d_sae: int, groups: int, high: float, low: float) -> tuple[Tensor, Tensor]:
    """(group index [d_sae], target frequency [d_sae]): `groups` contiguous groups of (nearly) equal size."""
    group = torch.arange(d_sae) * groups // d_sae
    steps = torch.arange(groups, dtype=torch.float64) / max(groups - 1, 1)
    per_group = high * (low / high) ** steps
    return group, per_group[group].float()


@torch.no_grad()
def adapt_biases(bias: Tensor, freq: Tensor, peak: Tensor, target: Tensor, group: Tensor, gamma: float,
                 eps: float) -> Tensor:
    """The new biases [d_sae] from one window's firing frequencies and peak pre-activations (the GBA rule)."""
    fired = peak > 0
    n_groups = int(group.max()) + 1
    sums = torch.zeros(n_groups, dtype=peak.dtype, device=peak.device).index_add_(0, group, peak * fired)
    counts = torch.zeros(n_groups, dtype=peak.dtype, device=peak.device).index_add_(0, group, fired.to(peak.dtype))
    mean_peak = (sums / counts.clamp(min=1))[group]  # 0 for a group where nothing fired
    lowered = (bias - gamma * peak).clamp(min=-1.0)
    raised = (bias + gamma * mean_peak).clamp(max=0.0)
    return torch.where(freq > target, lowered, torch.where(freq < eps, raised, bias))


@dataclass
class GBATrainingSAEConfig(TrainingSAEConfig):
    """A ReLU SAE's training config, no sparsity coefficient; GBA's options (see OPTIONS for their meaning)."""

    groups: int = _DEFAULTS["groups"]
    """Groups of features with geometrically spaced target frequencies."""
    target_high: float = _DEFAULTS["target_high"]
    """Target frequency of the first group."""
    target_low: float = _DEFAULTS["target_low"]
    """Target frequency of the last group."""
    gamma: float = _DEFAULTS["gamma"]
    """Bias step, as a share of the peak pre-activation."""
    update_every: int = _DEFAULTS["update_every"]
    """Steps between bias updates."""
    eps: float = _DEFAULTS["eps"]
    """Frequency below which a feature's bias is raised."""
    min_fires: float = _DEFAULTS["min_fires"]
    """Expected firings at its target that a group's frequency is counted over (in whole windows)."""
    quantile_init: bool = _DEFAULTS["quantile_init"]
    """Start the biases at their targets' quantiles of the initial pre-activations (else at 0)."""

    def __post_init__(self):
        super().__post_init__()
        try:
            check_gba_options({name: getattr(self, name) for name in _DEFAULTS}, self.d_sae)
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def architecture(cls) -> str:
        return "sparsescope_gba"

    def get_inference_config_class(self) -> type[SAEConfig]:
        return StandardSAEConfig


_WINDOW = ("fire_count", "peak", "window_tokens", "window_steps", "past_count", "past_peak", "past_tokens",
           "windows_done")
"""Buffers of the running window and the past ones (checkpointed, not saved with the inference weights)."""


@torch.no_grad()
def window_stats(count: Tensor, peak: Tensor, tokens: Tensor, newest: int, target: Tensor, group: Tensor,
                 min_fires: float) -> tuple[Tensor, Tensor]:
    """(frequency, peak pre-activation) [d_sae] of each feature over its group's last windows: as few as hold
    min_fires / target tokens (the target fires min_fires times there on average), or all that are filled.

    count, peak [W, d_sae] and tokens [W] are a ring of the last W windows; `newest` is the last one's slot."""
    slots = tokens.shape[0]
    order = (newest - torch.arange(slots, device=tokens.device)) % slots  # newest first
    held = tokens[order].cumsum(0)  # tokens in the newest 1, 2, ... windows
    filled = int((tokens[order] > 0).sum())
    group_target = torch.zeros(int(group.max()) + 1, dtype=target.dtype, device=target.device)
    group_target[group] = target
    need = min_fires / group_target  # tokens each group's frequency is counted over
    used = ((held[None, :] < need[:, None]).sum(dim=1) + 1).clamp(max=max(filled, 1))  # windows per group
    mask = torch.arange(slots, device=tokens.device)[:, None] < used[group][None, :]  # [W, d_sae]
    fires = (count[order] * mask).sum(dim=0)
    freq = fires.float() / held[used - 1][group].clamp(min=1).float()
    return freq, torch.where(mask, peak[order], float("-inf")).amax(dim=0)


class GBATrainingSAE(StandardTrainingSAE):
    """SAELens' standard training SAE with the biases as buffers set by `adapt_biases`, and no L1 term."""

    cfg: GBATrainingSAEConfig  # type: ignore[assignment]
    b_enc: Tensor

    def __init__(self, cfg: GBATrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[arg-type]
        group, target = group_targets(cfg.d_sae, cfg.groups, cfg.target_high, cfg.target_low)
        device = self.W_dec.device
        # Derived from the config: not saved, rebuilt on load.
        self.register_buffer("group", group.to(device), persistent=False)
        self.register_buffer("target", target.to(device), persistent=False)
        self.register_buffer("fire_count", torch.zeros(cfg.d_sae, dtype=torch.long, device=device))
        self.register_buffer("peak", torch.full((cfg.d_sae,), float("-inf"), device=device))
        self.register_buffer("window_tokens", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("past_count", torch.zeros(MAX_WINDOWS, cfg.d_sae, dtype=torch.int32, device=device))
        self.register_buffer("past_peak", torch.full((MAX_WINDOWS, cfg.d_sae), float("-inf"), device=device))
        self.register_buffer("past_tokens", torch.zeros(MAX_WINDOWS, dtype=torch.long, device=device))
        self.register_buffer("windows_done", torch.zeros((), dtype=torch.long, device=device))

    def initialize_weights(self) -> None:
        super().initialize_weights()
        # Tied, as in the paper: decoder row m is a_m * w_m, w_m the unit encoder column (W_dec is derived).
        scale = self._parameters.pop("W_dec").detach().norm(dim=-1)
        self.a = torch.nn.Parameter(scale)
        # Out of parameters(): no optimizer can hold them. b_enc is set by the rule; b_dec (the paper's b_pre) is
        # fixed at the geometric median of a sample (init_from_sample): trained, its gradient through the encoder
        # is a gradient on every feature's threshold (w_m . b_pre - b_m), which the reconstruction loss always
        # lowers (no sparsity term), faster than the rule raises them: L0 runs away.
        for name in ("b_enc", "b_dec"):
            self.register_buffer(name, self._parameters.pop(name).detach())
        self.normalize_encoder()

    @property
    def W_dec(self) -> Tensor:  # type: ignore[override]
        """[d_sae, d_in]: a_m * w_m (the unit encoder column), differentiable in both."""
        return self.a[:, None] * self.W_enc.T

    def get_coefficients(self) -> dict[str, Any]:
        return {}

    def calculate_aux_loss(self, step_input: TrainStepInput, feature_acts: Tensor, hidden_pre: Tensor,
                           sae_out: Tensor) -> dict[str, Tensor]:
        return {}  # GBA's sparsity comes from the biases alone

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        output = super().training_forward_pass(step_input)
        with torch.no_grad():
            pre = output.hidden_pre.detach().reshape(-1, self.cfg.d_sae)  # [N, d_sae]
            self.fire_count += (pre > 0).sum(dim=0)
            torch.maximum(self.peak, pre.amax(dim=0).to(self.peak.dtype), out=self.peak)
            self.window_tokens += pre.shape[0]
        return output

    @torch.no_grad()
    def normalize_encoder(self) -> None:
        """Unit-norm encoder columns: the bias range [-1, 0] is on the scale of a unit direction."""
        self.W_enc.div_(self.W_enc.norm(dim=0, keepdim=True).clamp(min=1e-8))

    @torch.no_grad()
    def after_step(self, batch: Tensor, fired: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Upkeep after each optimizer step (train_step): unit encoder columns, and every `update_every` steps
        the bias update from the window's counts, which then start again."""
        self.normalize_encoder()
        self.window_steps += 1
        if int(self.window_steps) < self.cfg.update_every:
            return
        slot = int(self.windows_done) % MAX_WINDOWS
        self.past_count[slot] = self.fire_count.to(torch.int32)
        self.past_peak[slot] = self.peak
        self.past_tokens[slot] = self.window_tokens
        self.windows_done += 1
        freq, peak = window_stats(self.past_count, self.past_peak, self.past_tokens, slot, self.target, self.group,
                                  self.cfg.min_fires)
        bias = adapt_biases(self.b_enc, freq, peak, self.target, self.group, self.cfg.gamma, self.cfg.eps)
        self.past_peak += bias - self.b_enc  # the past peaks as they would be with the new bias
        self.b_enc.copy_(bias)
        self.fire_count.zero_()
        self.peak.fill_(float("-inf"))
        self.window_tokens.zero_()
        self.window_steps.zero_()

    @torch.no_grad()
    def init_from_sample(self, rows: Tensor) -> None:
        """b_dec = geometric median of the rows; with quantile_init, each bias at minus its target's quantile of
        the pre-activations (clipped to [-1, 0]), so that each feature starts near its target frequency; the
        decoder scales a_m at their least-squares value on the rows."""
        from sae.dictionaries.factory import geometric_median

        self.b_dec.copy_(geometric_median(rows))
        centred = rows - self.b_dec
        pre = centred @ self.W_enc  # [n, d_sae]
        if self.cfg.quantile_init:
            for g in range(self.cfg.groups):
                cols = (self.group == g).nonzero().squeeze(1)
                target = float(self.target[cols[0]])
                rank = min(max(int(round((1 - target) * rows.shape[0])), 1), rows.shape[0])
                threshold = pre[:, cols].kthvalue(rank, dim=0).values  # [group size]
                self.b_enc[cols] = (-threshold).clamp(-1.0, 0.0)
        self._fit_decoder_scale(centred, torch.relu(pre + self.b_enc))

    @torch.no_grad()
    def _fit_decoder_scale(self, centred: Tensor, acts: Tensor) -> None:
        """Every a_m at the one value that best reconstructs the centred sample (least squares): from SAELens'
        0.1, Adam's steps of about lr a step would take far longer than one pass to reach the data's scale."""
        basis = acts @ self.W_enc.T  # the reconstruction with every a_m = 1
        fit = float((basis * centred).sum() / basis.pow(2).sum().clamp(min=1e-12))
        if fit > 0:
            self.a.fill_(fit)

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """As SAELens' fold (W_enc * s, W_dec / s, b_dec / s) with W_dec = a * W_enc^T: a / s^2."""
        self.W_enc.mul_(scaling_factor)
        self.a.div_(scaling_factor ** 2)
        self.b_dec.div_(scaling_factor)
        self.cfg.normalize_activations = "none"

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        for name in _WINDOW:
            state_dict.pop(name, None)
        state_dict["W_dec"] = self.W_dec.detach().contiguous()  # a plain standard SAE's decoder
        state_dict.pop("a", None)
        super().process_state_dict_for_saving_inference(state_dict)


GBA = Architecture(
    "gba", GBATrainingSAE, GBATrainingSAEConfig, StandardSAE, StandardSAEConfig, saelens_names=("sparsescope_gba",),
    options=OPTIONS, check=check_gba_options, unit_norm_inputs=True)
