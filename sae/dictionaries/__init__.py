"""SparseScope's dictionary architectures, registered with SAELens, and the API the training loop calls.

Every architecture is one `Architecture` record in `registry.ARCHITECTURES` (name -> record); the CLI's choices,
defaults and help, the checks of DictSpec, the training dictionary and what analysis shows all derive from it:

    name       file          SAELens name: training / saved        k or --l1 (default)              flags
    relu       plain.py      standard / standard                   --l1: L1 penalty (5)
    topk       topk.py       sparsescope_topk / topk               k: active features per token (32)
    batchtopk  batchtopk.py  sparsescope_batchtopk / jumprelu (*)  k: the same, batch average (32)
    jumprelu   plain.py      jumprelu / jumprelu                   --l1: L0 penalty (1)
    mp         mp.py         sparsescope_mp / sparsescope_mp       k: pursuit steps (32)            pursuit steps, tied
    codebook   codebook.py   sparsescope_codebook / (same)         k: codes per token (8)           codes, tied
    gba        gba.py        sparsescope_gba / standard            --option (groups, targets, ...)  unit-norm inputs
    neurons    neurons.py    - / sparsescope_neurons               (not trained: `sparsescope neurons add`)

(*) with its learned threshold: a plain JumpReLU SAE for any SAELens install; `arch_of` still tells it is a
BatchTopK dictionary, by the training architecture in its metadata.

What differs at run time is a method of the class, looked up by name where a class may lack it (SAELens' own):
`after_step(batch, fired, optimizer)` after each optimizer step (train_step), `init_from_sample(rows)` before
training (init_from_sample; default: b_dec = geometric median), `feature_activations(x)` for statistics
(default: encode). Importing this package registers every architecture, so `sae_lens.SAE.load_from_disk` loads
every dictionary SparseScope saves.

Adding an architecture is one new file and one register line: in `NAME.py`, subclass SAELens' config, inference
and training classes (their config's `architecture()` returns a new SAELens name), define those methods where
the defaults do not fit, and declare `NAME = Architecture("name", TrainingSAE, TrainingConfig, SAE, Config,
saelens_names=(...), default_k=... or default_sparsity=..., ...)`; then add it to the tuple in
`registry._register_builtin` (or call `register(NAME)` from anywhere, as tests/unit/dictionaries/test_contract.py
does). An architecture that is not trained (neurons) has no training class and names the command that creates
its dictionaries (`created_by`); `trainable()` lists the ones `train --arch` takes.
"""
# The registry first: it imports every architecture file, and each of them imports it back.
# isort: off
from sae.dictionaries.registry import (
    ARCHITECTURES,
    Architecture,
    Option,
    arch_of,
    architecture,
    feature_activations,
    lookup,
    register,
    trainable,
    unregister,
)
# isort: on
from sae.dictionaries.batchtopk import SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig
from sae.dictionaries.codebook import (
    CodebookSAE,
    CodebookSAEConfig,
    CodebookTrainingSAE,
    CodebookTrainingSAEConfig,
    codebook_code_ids,
    kmeans_init,
    replace_dead_codes,
)
from sae.dictionaries.factory import (
    DictSpec,
    build_training_sae,
    check_options,
    geometric_median,
    init_from_sample,
    parse_options,
)
from sae.dictionaries.gba import GBATrainingSAE, GBATrainingSAEConfig, adapt_biases
from sae.dictionaries.mp import (
    MPSAE,
    STOP_REASONS,
    MPSAEConfig,
    MPSteps,
    MPTrainingSAE,
    MPTrainingSAEConfig,
    mp_encode_steps,
    with_residual_threshold,
)
from sae.dictionaries.neurons import NeuronsSAE, NeuronsSAEConfig, neuron_dictionary, neuron_layer
from sae.dictionaries.step import StepOutput, train_step
from sae.dictionaries.storage import load_dictionary, save_dictionary
from sae.dictionaries.topk import SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig

__all__ = [
    "ARCHITECTURES", "Architecture", "STOP_REASONS", "CodebookSAE", "CodebookSAEConfig", "CodebookTrainingSAE",
    "CodebookTrainingSAEConfig", "DictSpec", "GBATrainingSAE", "GBATrainingSAEConfig", "MPSAE", "MPSAEConfig",
    "MPSteps", "MPTrainingSAE", "MPTrainingSAEConfig", "NeuronsSAE", "NeuronsSAEConfig", "Option",
    "SparseBatchTopKTrainingSAE", "SparseBatchTopKTrainingSAEConfig", "SparseTopKTrainingSAE",
    "SparseTopKTrainingSAEConfig", "StepOutput", "adapt_biases", "arch_of", "architecture", "build_training_sae",
    "check_options", "codebook_code_ids", "feature_activations", "geometric_median", "init_from_sample",
    "kmeans_init", "load_dictionary", "lookup", "mp_encode_steps", "neuron_dictionary", "neuron_layer",
    "parse_options", "register", "replace_dead_codes", "save_dictionary", "train_step", "trainable", "unregister",
    "with_residual_threshold",
]
