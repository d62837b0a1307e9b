"""MLP neurons as features: add a layer's neuron dictionary to a workspace, and find concept neurons by decoding
every output neuron through the final norm's weight and the unembedding ("Decoding specialised feature neurons
in LLMs with the final projection layer").

    row = add_neurons(ws, NeuronsRequest(layer=29))                  # the dictionary `neurons-L29`, no training
    found = find_neurons(model, range(20, 30), "dog cat", top=10)    # concept neurons, best first

Decoding: neuron i of layer L writes W_out[L][i] to the residual stream; its logit effects are
final_norm(W_out[L][i]) @ W_U (analysis.features.weights: the norm's weight, and centring for a LayerNorm), one
[block, d_model] x [d_model, vocab] float32 matmul per block of neurons. A SwiGLU neuron's activation is signed,
so both ends are read: the `+` side (tokens it promotes when it is positive) and the `-` side (the most negative
effects: the tokens it promotes when it is negative).

Concept score of one side: the share of its `tokens` top decoded tokens that match a concept word. A token
matches when its text, with surrounding whitespace stripped and lowercased, equals a concept word or the word
plus "s" (' Dog', 'dogs' and ' dog' match "dog"). Ties are broken by the softmax mass of the matching tokens
among those top tokens (their logits' softmax), so the side whose matches lead its list ranks first.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from analysis.dictionaries import check_new_name, install_dictionary
from store import dictionaries as repo
from store.errors import InputError
from store.workspace import Workspace

TOKENS = 20
"""Decoded tokens per side that the concept score reads (and that are shown)."""
BLOCK = 256
"""Neurons decoded per matmul: a [BLOCK, vocab] float32 block (48 MiB at vocab 49,152)."""


# ---------------------------------------------------------------------------------------------- add

@dataclass(frozen=True)
class NeuronsRequest:
    layer: int
    model: str | None = None
    """None: the embedded model."""
    name: str | None = None
    """None: neurons-L{layer}."""
    device: str | None = None

    @property
    def dictionary_name(self) -> str:
        return self.name or f"neurons-L{self.layer}"


def add_neurons(ws: Workspace, req: NeuronsRequest, lm=None) -> repo.DictionaryRow:
    """Create the neuron dictionary of req.layer's MLP and record it (no metrics: nothing is reconstructed).

    Every input is checked (name, model, layer) before anything is written."""
    from analysis.byod import canonical_model_name
    from sae.dictionaries import neuron_dictionary, neuron_layer
    from sae.models import DEFAULT_MODEL, load_model
    from store.db import session

    name = req.dictionary_name
    with session(ws.db_path) as con:
        check_new_name(ws, con, name)
    asked = req.model or DEFAULT_MODEL
    if lm is None or lm.cfg.model_name != asked:
        lm = load_model(asked, device=req.device)
    neuron_layer(lm, req.layer)
    sae = neuron_dictionary(lm, req.layer)
    meta = sae.cfg.metadata
    row = repo.DictionaryRow(name, canonical_model_name(lm, asked), meta.hook_name, "neurons", sae.cfg.d_in,
                             sae.cfg.d_sae, None, str(ws.named("dictionaries", name)),
                             source=f"neurons of layer {req.layer}")
    return install_dictionary(ws, ws.db_path, row, sae, None)


# ---------------------------------------------------------------------------------------------- find

def parse_layers(text: str) -> list[int]:
    """`L` or `A-B` (inclusive) as layer numbers (find_neurons checks them against the model)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text or "")
    if match is None:
        raise InputError(f"layers {text!r}: expected L or A-B (e.g. 20-29)")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if first > last:
        raise InputError(f"layers {text!r}: the first layer is after the last")
    return list(range(first, last + 1))


def concept_words(text: str) -> list[str]:
    """The concept's words, lowercased (split on spaces and commas); InputError when there are none."""
    words = [w.lower() for w in re.split(r"[\s,]+", text or "") if w]
    if not words:
        raise InputError("--concept needs at least one word (e.g. --concept 'dog cat')")
    return words


def token_key(text: str) -> str:
    """A token's text as the concept score compares it: surrounding whitespace stripped, lowercased."""
    return text.strip().lower()


def concept_mask(vocab: Sequence[str], words: Sequence[str]) -> Tensor:
    """[vocab] True where a token matches a concept word (the word itself, or the word plus "s")."""
    wanted = set(words) | {w + "s" for w in words}
    return torch.tensor([token_key(t) in wanted for t in vocab], dtype=torch.bool)


def concept_scores(ids: Tensor, logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(share, mass), each [n]: for rows of top token ids [n, k] and their logits [n, k] (best first), the share
    of the k tokens that match (mask [vocab]) and the softmax mass of the matching ones among the k."""
    hits = mask[ids]  # [n, k]
    share = hits.float().mean(dim=1)
    mass = (torch.softmax(logits.float(), dim=1) * hits).sum(dim=1)
    return share, mass


@torch.no_grad()
def decode_layer(model, layer: int, tokens: int = TOKENS, block: int = BLOCK) -> tuple[Tensor, ...]:
    """(top_ids, top_vals, bottom_ids, bottom_vals), each [d_mlp, tokens]: the tokens every output neuron of
    `layer` promotes most (descending) and suppresses most (most negative first)."""
    from analysis.features.weights import final_norm_map, logit_effects

    W_out = model.blocks[layer].mlp.W_out.detach()  # [d_mlp, d_model]
    return logit_effects(W_out, model.W_U.detach(), final_norm_map(model), top=tokens, block=block)


@dataclass(frozen=True)
class NeuronHit:
    layer: int
    neuron: int
    sign: str
    """+: the tokens it promotes when positive; -: when negative (its most negative logit effects)."""
    score: float
    """Share of the top decoded tokens that match the concept."""
    mass: float
    """Softmax mass of the matching tokens among the top decoded tokens (tie-break)."""
    tokens: tuple[str, ...]
    """The side's top decoded tokens, strongest first."""
    logits: tuple[float, ...]
    """Their logit effects at activation +1 (the + side) or -1 (the - side): positive on both sides."""


@dataclass(frozen=True)
class FindResult:
    hits: list[NeuronHit]
    neurons: int
    """Output neurons decoded (both signs each)."""
    seconds: float
    """Time spent decoding and scoring (the model already loaded)."""


def find_neurons(model, layers: Sequence[int], concept: str, top: int = 10, tokens: int = TOKENS) -> FindResult:
    """The `top` neuron sides of `layers` whose decoded tokens concentrate most on the concept's words."""
    from analysis.features.analyze import vocab_texts
    from sae.dictionaries import neuron_layer

    words = concept_words(concept)
    if top < 1 or tokens < 1:
        raise InputError(f"--top and --tokens must be at least 1 (got {top}, {tokens})")
    for layer in layers:
        neuron_layer(model, layer)
    vocab = vocab_texts(model.tokenizer, model.cfg.d_vocab)
    mask = concept_mask(vocab, words)
    started, candidates, neurons = time.perf_counter(), [], 0
    for layer in layers:
        top_ids, top_vals, bottom_ids, bottom_vals = decode_layer(model, layer, tokens)
        neurons += top_ids.shape[0]
        # the - side's effects negated: what the neuron adds to those logits at activation -1
        for sign, ids, vals in (("+", top_ids, top_vals), ("-", bottom_ids, -bottom_vals)):
            share, mass = concept_scores(ids, vals, mask)
            candidates.append((layer, sign, ids, vals, share, mass))
    hits = _best(candidates, top, vocab)
    return FindResult(hits, neurons, time.perf_counter() - started)


def _best(candidates: list, top: int, vocab: Sequence[str]) -> list[NeuronHit]:
    """The `top` sides with the highest (share, mass) over every layer and sign; none that match nothing."""
    hits = []
    for layer, sign, ids, vals, share, mass in candidates:
        order = torch.argsort(mass, descending=True, stable=True)
        order = order[torch.argsort(share[order], descending=True, stable=True)][:top]
        hits += [NeuronHit(layer, int(n), sign, float(share[n]), float(mass[n]),
                           tuple(vocab[int(t)] for t in ids[n]), tuple(float(v) for v in vals[n]))
                 for n in order if share[n] > 0]
    hits.sort(key=lambda h: (-h.score, -h.mass, h.layer, h.neuron))
    return hits[:top]
