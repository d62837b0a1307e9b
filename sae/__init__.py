"""The compute engine: language models, corpora, activations, dictionaries, training."""
import sae.dictionaries  # noqa: F401  registers architectures with SAELens
