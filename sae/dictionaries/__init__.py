"""SparseScope's dictionary architectures, registered with SAELens, and the API the training loop calls.

Architectures (DictSpec.arch -> what SAELens sees):
    relu       SAELens `standard` (L1)                  jumprelu   SAELens `jumprelu`
    topk       trains as `sparsescope_topk`, saved as SAELens `topk`
    batchtopk  trains as `sparsescope_batchtopk`, saved as SAELens `jumprelu` (with its inference threshold)
    mp         `sparsescope_mp` (SAELens' MatchingPursuitSAE with a fast encoder)
    codebook   `sparsescope_codebook`
Importing this package registers the `sparsescope_*` classes, so `sae_lens.SAE.load_from_disk` loads every
dictionary SparseScope saves.
"""
from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
    register_sae_class,
    register_sae_training_class,
)

from sae.dictionaries.batchtopk import SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig
from sae.dictionaries.codebook import (
    CodebookSAE,
    CodebookSAEConfig,
    CodebookTrainingSAE,
    CodebookTrainingSAEConfig,
    codebook_code_ids,
    codebook_similarities,
    kmeans_init,
    replace_dead_codes,
)
from sae.dictionaries.factory import (
    ARCHITECTURES,
    DEFAULT_K,
    DictSpec,
    build_training_sae,
    default_d_sae,
    geometric_median,
    init_from_sample,
)
from sae.dictionaries.mp import (
    STOP_REASONS,
    MPSAE,
    MPSAEConfig,
    MPSteps,
    MPTrainingSAE,
    MPTrainingSAEConfig,
    mp_encode_steps,
)
from sae.dictionaries.step import StepOutput, train_step
from sae.dictionaries.storage import load_dictionary, save_dictionary
from sae.dictionaries.topk import SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig


def _register() -> None:
    """Register our classes once (re-importing or reloading the package must not raise)."""
    inference = {"sparsescope_mp": (MPSAE, MPSAEConfig), "sparsescope_codebook": (CodebookSAE, CodebookSAEConfig)}
    training = {
        "sparsescope_topk": (SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig),
        "sparsescope_batchtopk": (SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig),
        "sparsescope_mp": (MPTrainingSAE, MPTrainingSAEConfig),
        "sparsescope_codebook": (CodebookTrainingSAE, CodebookTrainingSAEConfig),
    }
    for name, classes in inference.items():
        if name not in SAE_CLASS_REGISTRY:
            register_sae_class(name, *classes)
    for name, classes in training.items():
        if name not in SAE_TRAINING_CLASS_REGISTRY:
            register_sae_training_class(name, *classes)


_register()


def dictionary_arch(sae) -> str:
    """The SparseScope architecture name (one of ARCHITECTURES) of a training or loaded dictionary."""
    cfg = sae.cfg
    name = cfg.architecture()
    trained_as = cfg.metadata.get("training_architecture") if cfg.metadata is not None else None
    if name == "jumprelu" and trained_as in ("batchtopk", "sparsescope_batchtopk"):
        return "batchtopk"
    return {"standard": "relu", "matching_pursuit": "mp", "sparsescope_mp": "mp", "sparsescope_codebook": "codebook",
            "sparsescope_topk": "topk", "sparsescope_batchtopk": "batchtopk"}.get(name, name)


def feature_activations(sae, x):
    """What statistics and the prompt inspector read as feature activations of x [N, d_in]: `encode`, except for
    a codebook, whose chosen codes all weigh 1/k there: its codes' similarities to the input (codebook_similarities)."""
    return codebook_similarities(sae, x) if dictionary_arch(sae) == "codebook" else sae.encode(x)


__all__ = [
    "ARCHITECTURES", "DEFAULT_K", "STOP_REASONS", "CodebookSAE", "CodebookSAEConfig", "CodebookTrainingSAE",
    "CodebookTrainingSAEConfig", "DictSpec", "MPSAE", "MPSAEConfig", "MPSteps", "MPTrainingSAE",
    "MPTrainingSAEConfig", "SparseBatchTopKTrainingSAE", "SparseBatchTopKTrainingSAEConfig",
    "SparseTopKTrainingSAE", "SparseTopKTrainingSAEConfig", "StepOutput", "build_training_sae",
    "codebook_code_ids", "codebook_similarities", "default_d_sae", "dictionary_arch", "feature_activations",
    "geometric_median", "init_from_sample", "kmeans_init", "load_dictionary", "mp_encode_steps", "replace_dead_codes",
    "save_dictionary", "train_step",
]
