"""Language models as TransformerLens HookedTransformers: the embedded default, a tiny random one, or any
TransformerLens name (read from the local Hugging Face cache, downloaded into it when online)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from sae import smollm2
from sae.device import pick_device
from store.errors import InputError

DEFAULT_MODEL = smollm2.NAME
TINY = "tiny-random"
_HOOK_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_params: int
    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    n_ctx: int
    hook_templates: tuple[str, ...]
    """Hook names with the layer replaced by `{L}`, e.g. `blocks.{L}.hook_resid_post`."""


def tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + <|endoftext|>) built in memory: real text round trips, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0, **{ch: i + 1 for i, ch in enumerate(sorted(alphabet))}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    # TransformerLens reloads a tokenizer by name to add BOS unless it says it handles BOS already; this one
    # has no files, and TransformerLens prepends BOS itself (default_prepend_bos) when the tokenizer does not.
    tokenizer.init_kwargs.update(name_or_path=TINY, add_bos_token=True)
    return tokenizer


def tiny_config(**overrides):
    from transformer_lens import HookedTransformerConfig

    fields = dict(n_layers=2, d_model=64, d_head=16, n_heads=4, d_mlp=256, n_ctx=256, d_vocab=257,
                  act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
                  default_prepend_bos=True, model_name=TINY, seed=0)
    fields.update(overrides)
    return HookedTransformerConfig(**fields)


def _load_tiny(device: torch.device, **overrides):
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    cfg = tiny_config(device=str(device), **overrides)
    return HookedTransformer(cfg, tokenizer=tiny_tokenizer()).eval()


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None):
    """A HookedTransformer in fp32 for `name`: the embedded default, `tiny-random`, or a TransformerLens name."""
    dev = pick_device(device)
    if name == smollm2.NAME:
        return smollm2.load(dev)
    if name == TINY:
        return _load_tiny(dev)
    from transformer_lens import HookedTransformer, loading_from_pretrained

    try:
        official = loading_from_pretrained.get_official_model_name(name)
    except ValueError:
        raise InputError(f"unknown model {name!r} (try {DEFAULT_MODEL}, {TINY}, or a TransformerLens "
                         "model name such as gpt2)") from None
    try:
        return HookedTransformer.from_pretrained(official, device=str(dev), dtype=torch.float32).eval()
    except OSError as exc:  # not in the local Hugging Face cache and the Hub unreachable (or HF_HUB_OFFLINE=1)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"cannot load model {name!r} ({official}): {first}") from None


def hook_templates(model) -> tuple[str, ...]:
    """Distinct hook names of a model with layer numbers replaced by `{L}`."""
    seen: dict[str, None] = {}
    for name in model.hook_dict:
        seen[_HOOK_LAYER.sub("blocks.{L}.", name)] = None
    return tuple(seen)


def model_info(model) -> ModelInfo:
    cfg = model.cfg
    return ModelInfo(name=cfg.model_name, n_params=sum(p.numel() for p in model.parameters()),
                     n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                     d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, hook_templates=hook_templates(model))


def check_hook(model, hook: str) -> int:
    """Validate a hook name for `model`; return the layer it is in (-1 for hooks before block 0)."""
    match = _HOOK_LAYER.match(hook)
    if match and int(match.group(1)) >= model.cfg.n_layers:
        raise InputError(f"hook {hook!r} is on layer {match.group(1)}, but {model.cfg.model_name} has "
                         f"layers 0..{model.cfg.n_layers - 1}")
    if hook not in model.hook_dict:
        examples = ", ".join(t.replace("{L}", "0") for t in hook_templates(model)[:6])
        raise InputError(f"unknown hook {hook!r} for {model.cfg.model_name} (e.g. {examples}; "
                         "`sparsescope models` lists them)")
    return int(match.group(1)) if match else -1


def check_text(text: str, what: str = "the prompt") -> str:
    """`text` if a tokenizer can encode it. A surrogate code point cannot be encoded (Python keeps the bytes of an
    argument that is not UTF-8 as U+DC80..U+DCFF): refused with one line rather than replaced, so what is run and
    stored is what was typed. Emoji and every other character pass."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} is not valid text: character {exc.start + 1} is an unpaired surrogate "
                         f"(U+{ord(text[exc.start]):04X}); is the terminal's encoding UTF-8?") from None
    return text


def prompt_tokens(model, prompt: str):
    """[1, pos] tokens of `prompt` as the model reads it (BOS first where the model uses one); InputError when it
    is empty or beyond the model's context (TransformerLens would truncate it silently)."""
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty")
    tokens = model.to_tokens(check_text(prompt), truncate=False)
    if tokens.shape[1] > model.cfg.n_ctx:
        raise InputError(f"the prompt is {tokens.shape[1]} tokens long, beyond the model's context of "
                         f"{model.cfg.n_ctx} tokens")
    return tokens


def single_token(model, text: str, what: str = "target") -> int:
    """The id of `text` when it is exactly one token of the model's vocabulary."""
    if not text:
        raise InputError(f"the {what} is empty")
    ids = model.to_tokens(check_text(text, f"the {what}"), prepend_bos=False)[0]
    if len(ids) != 1:
        raise InputError(f"{what} {text!r} is {len(ids)} tokens; give exactly one token (mind the leading "
                         "space, e.g. ' Paris')")
    return int(ids[0])


def stop_layer(model, hook: str) -> int | None:
    """`stop_at_layer` that runs the model just far enough to reach `hook` (None: the whole model)."""
    layer = check_hook(model, hook)
    if layer >= 0:
        return layer + 1
    return 0 if hook in ("hook_embed", "hook_pos_embed", "hook_tokens") else None


def hook_output_dim(model, hook: str) -> int:
    """Width of the activations at `hook` once flattened per token (hook_z: heads x d_head, head-major)."""
    with torch.no_grad():
        tokens = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop_layer(model, hook))
    return int(cache[hook][0, 0].numel())


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The tokenizer of model `name` alone (corpus building does not need the weights)."""
    if name == smollm2.NAME:
        return smollm2.load_tokenizer()
    if name == TINY:
        return tiny_tokenizer()
    return load_model(name, device="cpu").tokenizer


def prepends_bos(name: str) -> bool:
    """Whether contexts for `name` start with its BOS token (the model's own convention)."""
    if name == smollm2.NAME:
        return False
    if name == TINY:
        return True
    return True  # TransformerLens' default for its pretrained models
