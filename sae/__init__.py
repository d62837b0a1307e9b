"""The compute engine: language models, corpora, activations, dictionaries, training."""
