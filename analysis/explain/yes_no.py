"""Yes/no questions to a local TransformerLens model, many at once: one batched forward pass that reads the
next-token logits of the answers instead of generating a reply to each question (EmbeddedChat.yes_no).

    verdicts = yes_no_verdicts(model, [prompt_ids, ...])   # [True, False, ...]: yes, no

A verdict is the likelier of the two answers as the reply's first token: the best-scoring token among the verdict
words (chat.YES_WORDS and NO_WORDS, in lower, capitalised and upper case, with and without a leading space) that
the tokenizer holds as one token, yes words against no words. When the model's greedy reply is such a token (with
whatever follows it), its first token is this very choice, so the two ways agree; the batched way also gives a
verdict where the greedy reply would start with something else.
"""
from __future__ import annotations

import torch

from analysis.explain.chat import NO_WORDS, YES_WORDS, MalformedReply

BATCH = 32
"""Prompts run through the model together (after their shared start)."""


def answer_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """(yes token ids, no token ids): every spelling of a verdict word that the tokenizer holds as one token."""

    def whole_words(words):
        found: dict[int, None] = {}
        for word in words:
            for spelling in {word, word.capitalize(), word.upper()}:
                for text in (spelling, " " + spelling):
                    ids = tokenizer.encode(text, add_special_tokens=False)
                    if len(ids) == 1:
                        found[ids[0]] = None
        return found

    yes, no = whole_words(YES_WORDS), whole_words(NO_WORDS)
    return [t for t in yes if t not in no], [t for t in no if t not in yes]


def shared_start(prompts: list[torch.Tensor]) -> int:
    """How many leading tokens every prompt shares, leaving each at least its last token."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for prompt in prompts[1:]:
        differ = torch.nonzero(prompt[:n] != first[:n])
        if len(differ):
            n = int(differ[0, 0])
    return n


@torch.no_grad()
def yes_no_verdicts(model, prompts: list[torch.Tensor]) -> list[bool]:
    """True where the answer to prompt i ((tokens,) ids ending where the reply begins) is yes, False for no."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    yes, no = answer_tokens(model.tokenizer)
    if not (yes and no):
        raise MalformedReply("the model's tokenizer holds no yes word or no no word as one token")
    device = model.cfg.device
    start = shared_start(prompts)
    cache = None
    if start:
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
        head = prompts[0][None, :start].to(device)
        model(head, attention_mask=torch.ones_like(head), past_kv_cache=cache, stop_at_layer=model.cfg.n_layers)
        cache.freeze()
    columns = torch.tensor(yes + no, device=device)
    verdicts: list[bool] = []
    for lo in range(0, len(prompts), BATCH):
        rests = [p[start:] for p in prompts[lo:lo + BATCH]]
        lengths = torch.tensor([len(r) for r in rests], device=device)
        # right-padded: attention is causal, so the padding after a prompt never reaches its last token
        tokens = torch.zeros((len(rests), int(lengths.max())), dtype=torch.long, device=device)
        for i, rest in enumerate(rests):
            tokens[i, :len(rest)] = rest
        resid = model(tokens, attention_mask=torch.ones_like(tokens), stop_at_layer=model.cfg.n_layers,
                      past_kv_cache=None if cache is None else _widened(cache, len(rests)))
        last = resid[torch.arange(len(rests), device=device), lengths - 1]
        logits = model.ln_final(last[:, None])[:, 0] @ model.W_U[:, columns] + model.b_U[columns]
        verdicts += (logits[:, :len(yes)].max(1).values > logits[:, len(yes):].max(1).values).tolist()
    return verdicts


def _widened(cache, n: int):
    """A frozen copy of a frozen batch-1 cache as a batch of n (views, no copies)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    entries = [TransformerLensKeyValueCacheEntry(e.past_keys.expand(n, -1, -1, -1), e.past_values.expand(n, -1, -1, -1),
                                                 frozen=True) for e in cache.entries]
    return TransformerLensKeyValueCache(entries, cache.previous_attention_mask.expand(n, -1), frozen=True)
