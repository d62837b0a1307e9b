"""A small generation loop over TransformerLens' KV cache: batched samples, streaming, per-position hooks.

TransformerLens' own generate cannot tell hooks which absolute positions they see, nor stream to a caller,
so each arm (default, steered) keeps its own cache and batch of `samples` rows and advances one token per
step. Arms are separate batches, so an arm's text does not depend on whether the other arm runs beside it
(a re-run or a sweep reproduces it). Sampling is coupled: every arm draws the same uniform number per
sample and step from its own generator seeded alike, so arms with equal distributions emit equal tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from analysis.steering.hooks import HookState
from store.errors import InputError

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Tokens that end a continuation besides the tokenizer's eos token."""


@dataclass(frozen=True)
class Sampling:
    temperature: float
    """0: greedy."""
    top_p: float
    seed: int


@dataclass
class GenStep:
    """What a stream yields after every step: the continuations so far, per arm."""

    step: int
    texts: dict[str, list[str]]
    ids: dict[str, list[list[int]]]
    """Generated token ids per sample, up to and including a stop token."""
    finished: bool


def prompt_tokens(model, prompt: str, chat: bool) -> Tensor:
    """[P] token ids of the prompt as the model sees it: chat template (with the assistant turn opened)
    or raw text with the model's own BOS convention."""
    if chat:
        tokenizer = model.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(f"{model.cfg.model_name} has no chat template; use raw completion (--raw)")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        return model.to_tokens(text, prepend_bos=False)[0]
    return model.to_tokens(prompt)[0]


def check_context(model, n_prompt: int, max_new_tokens: int) -> None:
    n_ctx = model.cfg.n_ctx
    if n_prompt >= n_ctx:
        raise InputError(f"the prompt is {n_prompt} tokens, longer than {model.cfg.model_name}'s context of "
                         f"{n_ctx} tokens (it must leave room for at least one new token)")
    if n_prompt + max_new_tokens > n_ctx:
        raise InputError(f"the prompt is {n_prompt} tokens; with {max_new_tokens} new tokens that exceeds "
                         f"{model.cfg.model_name}'s context of {n_ctx} tokens (at most "
                         f"{n_ctx - n_prompt} new tokens)")


def stop_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    found = {vocab[t] for t in STOP_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return sorted(found)


def sample(logits: Tensor, sampling: Sampling, generator: torch.Generator) -> Tensor:
    """[n] next tokens from logits [n, vocab]: greedy, or nucleus sampling by inverse CDF on one uniform
    number per row (the coupling between arms). The uniform is drawn in every mode, greedy included, so
    the generator advances alike whatever temperature and top_p an arm uses; arms whose nuclei hold the
    same renormalised probabilities emit the same token."""
    uniform = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64)
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.double() / sampling.temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if sampling.top_p < 1:  # at 1 the whole distribution: rounding in the cumsum must not cut its tail
        before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= sampling.top_p, 0.0)  # smallest prefix reaching top_p
    cdf = sorted_p.cumsum(dim=-1)
    pick = torch.searchsorted(cdf, uniform.to(cdf.device) * cdf[:, -1:]).clamp(max=cdf.shape[1] - 1)
    return order.gather(1, pick).squeeze(1)


class Arm:
    """One arm's batch: `n` copies of the prompt, its KV cache, its generator, its stopping state."""

    def __init__(self, model, prompt: Tensor, n: int, sampling: Sampling, stops: Sequence[int],
                 state: HookState | None):
        self.model, self.sampling, self.state = model, sampling, state
        self.stops = torch.tensor(list(stops) or [-1], device=prompt.device)
        self.generator = torch.Generator().manual_seed(sampling.seed)
        self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, n)
        self.position = 0
        self.finished = torch.zeros(n, dtype=torch.bool, device=prompt.device)
        self.lengths = torch.zeros(n, dtype=torch.long, device=prompt.device)
        self.new: list[Tensor] = []
        self.logits = self._forward(prompt[None].expand(n, -1))

    def _forward(self, tokens: Tensor) -> Tensor:
        """Logits [n, vocab] of the last position; the hooks edit only during the steered arm's calls."""
        if self.state is not None:
            self.state.offset, self.state.active = self.position, True
        try:
            # an explicit mask: TransformerLens would otherwise mask tokens equal to the pad token
            logits = self.model(tokens, past_kv_cache=self.cache, attention_mask=torch.ones_like(tokens))
        finally:
            if self.state is not None:
                self.state.active = False
        self.position += tokens.shape[1]
        return logits[:, -1]

    def step(self, last: bool) -> None:
        token = sample(self.logits, self.sampling, self.generator).to(self.finished.device)
        token = torch.where(self.finished, self.stops[0], token)  # finished rows idle on a stop token
        self.lengths += (~self.finished).long()
        self.new.append(token)
        self.finished |= torch.isin(token, self.stops)
        if not last and not bool(self.finished.all()):
            self.logits = self._forward(token[:, None])

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def ids(self) -> list[list[int]]:
        if not self.new:
            return [[] for _ in range(self.lengths.shape[0])]
        grid = torch.stack(self.new, dim=1).tolist()
        return [row[:n] for row, n in zip(grid, self.lengths.tolist())]


def generate_stream(model, prompt: Tensor, samples: int, sampling: Sampling, max_new_tokens: int,
                    arms: Mapping[str, HookState | None], hooks: Sequence[tuple[str, Callable]] = (),
                    decode: Callable[[list[int]], str] | None = None) -> Iterator[GenStep]:
    """Generate every arm one token per step and yield the continuations so far after each step.

    arms: name -> the HookState its forward calls switch on (None: unsteered). The hooks stay registered
    until the stream is exhausted or closed; consume it fully or close it.
    """
    decode = decode or (lambda ids: model.tokenizer.decode(ids, skip_special_tokens=True))
    stops = stop_ids(model.tokenizer)
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        running = {name: Arm(model, prompt, samples, sampling, stops, state) for name, state in arms.items()}
        for step in range(max_new_tokens):
            last = step == max_new_tokens - 1
            for arm in running.values():
                if not arm.done:
                    arm.step(last)
            finished = last or all(arm.done for arm in running.values())
            ids = {name: arm.ids() for name, arm in running.items()}
            texts = {name: [decode(row) for row in rows] for name, rows in ids.items()}
            yield GenStep(step, texts, ids, finished)
            if finished:
                return
