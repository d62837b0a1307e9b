"""The architecture registry: one `Architecture` record per dictionary architecture; everything else derives from it.

Lists of names, defaults and help text come from the records (`ARCHITECTURES`); what differs per architecture at
run time is a method of its class (`after_step`, `init_from_sample`, `feature_activations`, see the package
docstring); what analysis, reports and the UI show differs by flag (`has_pursuit_steps`, `has_codes`), never by
name. `register` also hands the record's classes to SAELens (`register_sae_class`,
`register_sae_training_class`), so `sae_lens.SAE.load_from_disk` loads what the architecture saves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
    register_sae_class,
    register_sae_training_class,
)

from store.errors import InputError

if TYPE_CHECKING:
    from sae_lens.saes.sae import SAE, SAEConfig, TrainingSAE, TrainingSAEConfig

    from sae.dictionaries.factory import DictSpec


@dataclass(frozen=True)
class Option:
    """An option of one architecture, given as `--option NAME=VALUE`: a field of its training config."""

    name: str
    """The training config's field, and what users type before `=`."""
    default: int | float | bool
    """Its value when not given; its type is the option's type."""
    meaning: str
    """Help text (what the value does), shown with the default."""

    def parse(self, text: str) -> int | float | bool:
        """The value of `text` in the option's type; InputError with one line when it is not one."""
        kind = type(self.default)
        try:
            if kind is bool:
                if text.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.strip().lower() in ("true", "1")
            return kind(text)
        except ValueError:
            raise InputError(f"--option {self.name} must be {kind.__name__} (got {text!r})") from None


@dataclass(frozen=True, eq=False)  # one record per architecture: compared and hashed by identity
class Architecture:
    name: str
    """What users type for --arch and what the store's `dictionaries.arch` holds."""
    training_class: type[TrainingSAE] | None = None
    """SAELens training class; None for an architecture SparseScope only loads (an imported SAELens `gated`)."""
    training_config: type[TrainingSAEConfig] | None = None
    """Its config class; `architecture()` gives the SAELens name it trains (and checkpoints) under."""
    inference_class: type[SAE] | None = None
    """SAELens class of the saved dictionary: what `SAE.load_from_disk` returns."""
    inference_config: type[SAEConfig] | None = None
    """Its config class; `architecture()` gives the SAELens name it is saved under (cfg.json)."""
    saelens_names: tuple[str, ...] = ()
    """SAELens architecture names (`cfg.architecture()`) of dictionaries that are this architecture: our training
    and inference classes', and SAELens' own equivalents that a user may import."""
    default_k: int | None = None
    """k when the user gives none; None: k does not apply (the training config has no `k` field)."""
    k_meaning: str = ""
    """What k counts, for help text ("active features per token")."""
    k_per_batch: bool = False
    """k is an average over the training batch (BatchTopK), not a bound on the active features of every row."""
    default_sparsity: float | None = None
    """Sparsity coefficient (--l1) when the user gives none; None: it does not apply."""
    sparsity_meaning: str = ""
    """What --l1 weighs, for help text ("L1 penalty")."""
    sparsity_field: str = ""
    """The training config's field that takes the sparsity coefficient (l1_coefficient, l0_coefficient)."""
    config_fields: Mapping[str, Any] = field(default_factory=dict)
    """Fixed training-config fields (mp: unit-norm atoms from the start)."""
    has_pursuit_steps: bool = False
    """Encodes by greedy steps that can be reported one by one (sae.dictionaries.mp_encode_steps)."""
    has_codes: bool = False
    """Chooses k discrete codes per token (codebook): steered by switching codes on, searched by code."""
    tied: bool = False
    """The encoder is derived from the decoder (no W_enc parameter of its own)."""
    options: tuple[Option, ...] = ()
    """Its own options (`--option NAME=VALUE`), each a field of its training config."""
    check: Callable[[Mapping[str, Any], int | None], None] | None = None
    """Raises InputError (one line) for option values that cannot hold together: called with every option
    (defaults filled in) and d_sae (None while not known)."""
    unit_norm_inputs: bool = False
    """Train on inputs scaled to mean norm 1 instead of sqrt(d_in) (thresholds on the pre-activation scale)."""
    created_by: str = ""
    """The command that creates its dictionaries when it is not trained (neurons: from a model's weights)."""

    @property
    def trainable(self) -> bool:
        """`--arch NAME` trains it (it has a training class)."""
        return self.training_class is not None and self.training_config is not None

    def build(self, spec: DictSpec, shared: dict[str, Any]) -> TrainingSAE:
        """A freshly initialised training dictionary for spec; `shared` holds the config fields every
        architecture takes (d_in, d_sae, device, metadata, reshape_activations)."""
        if not self.trainable:
            raise InputError(not_trained(self))
        fields = {**shared, **self.config_fields, **self.option_values(spec.options)}
        if self.default_k is not None:
            fields["k"] = spec.k_or_default
        if self.sparsity_field:
            fields[self.sparsity_field] = spec.sparsity_or_default
        return self.training_class(self.training_config(**fields))

    def option_values(self, given: Mapping[str, Any] | tuple = ()) -> dict[str, Any]:
        """Every option of the architecture: the given values over the defaults."""
        return {**{option.name: option.default for option in self.options}, **dict(given)}


ARCHITECTURES: dict[str, Architecture] = {}
"""Every registered architecture by name, in the order help text and errors list them."""
_ADDED_TO_SAELENS: dict[str, list[tuple[dict, str]]] = {}
"""Per architecture, the SAELens registry entries that `register` added (and `unregister` takes back)."""


def register(arch: Architecture) -> Architecture:
    """Add an architecture: `--arch NAME` trains it, analysis and steering take it, SAELens loads what it saves."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch
    added = []
    for table, add, cls, config in ((SAE_CLASS_REGISTRY, register_sae_class, arch.inference_class,
                                     arch.inference_config),
                                    (SAE_TRAINING_CLASS_REGISTRY, register_sae_training_class, arch.training_class,
                                     arch.training_config)):
        # A name already there is SAELens' own class (standard, topk, jumprelu) or ours from an earlier import.
        if config is not None and config.architecture() not in table:
            add(config.architecture(), cls, config)
            added.append((table, config.architecture()))
    _ADDED_TO_SAELENS[arch.name] = added
    return arch


def unregister(name: str) -> None:
    """Remove an architecture and the SAELens entries its registration added (for tests)."""
    ARCHITECTURES.pop(name, None)
    for table, saelens_name in _ADDED_TO_SAELENS.pop(name, []):
        table.pop(saelens_name, None)


def trainable() -> list[Architecture]:
    """The registered architectures `train --arch` takes, in registration order."""
    return [arch for arch in ARCHITECTURES.values() if arch.trainable]


def not_trained(arch: Architecture) -> str:
    """Why `--arch NAME` is refused for an architecture without a training class."""
    how = f"`{arch.created_by}` creates them" if arch.created_by else "SparseScope only loads them"
    return f"{arch.name} dictionaries are not trained ({how})"


def architecture(name: str) -> Architecture:
    """The registered architecture called name; InputError for any other name."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture {name!r} (choose from {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name]


def lookup(name: str) -> Architecture:
    """The record of a stored dictionary's `arch`: the registered one, or a record without flags for an
    architecture SparseScope only imports (what `arch_of` gives such a dictionary)."""
    return ARCHITECTURES.get(name) or Architecture(name, saelens_names=(name,))


def arch_of(sae) -> Architecture:
    """The architecture of a training or loaded dictionary (any SAELens SAE).

    A saved dictionary is first matched by what it was trained as together with the class it was saved as
    (BatchTopK is saved as SAELens `jumprelu`, with its learned threshold), then by its SAELens name alone.
    """
    name = sae.cfg.architecture()
    metadata = sae.cfg.metadata
    trained = metadata.get("training_architecture") if metadata is not None else None
    for arch in ARCHITECTURES.values():
        saved = arch.inference_config.architecture() if arch.inference_config is not None else None
        if trained in arch.saelens_names and name == saved:
            return arch
    return next((arch for arch in ARCHITECTURES.values() if name in arch.saelens_names), None) or lookup(name)


def feature_activations(sae, x):
    """What statistics and the prompt inspector read as feature activations of x [N, d_in]: the class's own
    `feature_activations` where it has one (a codebook: its chosen codes' similarities), else `encode`."""
    own = getattr(sae, "feature_activations", None)
    return own(x) if own is not None else sae.encode(x)


def _register_builtin() -> None:
    # Imported here, after Architecture is defined: each architecture file imports it to declare its record.
    from sae.dictionaries.batchtopk import BATCHTOPK
    from sae.dictionaries.codebook import CODEBOOK
    from sae.dictionaries.gba import GBA
    from sae.dictionaries.mp import MP
    from sae.dictionaries.plain import JUMPRELU, RELU
    from sae.dictionaries.topk import TOPK

    for arch in (RELU, TOPK, BATCHTOPK, JUMPRELU, MP, CODEBOOK, GBA):
        register(arch)

    from sae.dictionaries.neurons import NEURONS  # created from a model's weights, not trained

    register(NEURONS)


_register_builtin()
