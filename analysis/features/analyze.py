"""`sparsescope analyze`: one streaming pass of a dictionary over a corpus into the store.

The activations come from the workspace's activation cache when one covers the requested contexts (same model,
hook and corpus), else from running the model just far enough to reach the hook. Each batch is encoded once and
fed to the accumulators of analysis.features.stats (and analysis.features.pursuit for matching pursuit,
analysis.features.head_shares for attention-output dictionaries); weight-only
statistics (logit effects, decoder neighbours) come from the dictionary and the model's unembedding. Everything
lands in the store in one transaction (store.features.write_feature_stats), so a killed run leaves the previous
results intact.

Position 0 of every context is left out of every statistic, as in training: it is the attention sink, whose
activations are orders of magnitude larger than the rest.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from analysis.corpora import ensure_corpus
from analysis.features.stats import FeatureStatsAccumulator, StatsConfig
from store.corpora import Corpus, context_tokens, corpus_fingerprint
from store.errors import InputError
from store.faults import crash_point

SKIP_FIRST = 1
"""Positions left out at the start of each context (the attention sink)."""

ENCODE_BYTES = 128 * 2 ** 20
"""Most bytes of dense feature activations ([contexts x ctx, d_sae] float32) one batch encodes: encoding holds about
three such tensors at once, so wide dictionaries take fewer contexts at a time (4 of 128 tokens at 65,536 features
instead of 16: 0.4 GB instead of 1.5 GB; the encode runs as fast)."""


@dataclass(frozen=True)
class AnalyzeRequest:
    dictionary: str
    corpus: str = "builtin"
    tokens: int = 200_000
    """Corpus tokens to read (whole contexts; at most the corpus)."""
    examples: int = 20
    quantiles: int = 10
    batch: int = 16
    """Contexts encoded at a time (at most: see contexts_per_batch)."""
    device: str | None = None
    residual_threshold: float | None = None
    """MP dictionaries: analyse in adaptive mode, stopping at this residual norm (sae.dictionaries.mp)."""

    def check(self) -> None:
        for name in ("tokens", "examples", "quantiles", "batch"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if self.residual_threshold is not None:
            from sae.dictionaries.mp import check_residual_threshold
            check_residual_threshold(self.residual_threshold, "--residual-threshold")


@dataclass(frozen=True)
class Site:
    """What one pass reads: the dictionary, its model, the contexts and where their activations come from."""

    row: object
    """store.dictionaries.DictionaryRow"""
    sae: object
    model: object
    corpus: Corpus
    token_ids: Tensor
    """[n_contexts, ctx] the contexts read, in corpus order (context ids 0..n-1)."""
    cache: Path | None
    """Activation cache folder that covers the contexts, or None (run the model)."""
    fingerprint: str | None = None
    """Fingerprint of the corpus whose contexts are read (store.corpora), recorded with the results."""
    note: str = ""
    """One line when a cache of the corpus was skipped because it holds other text."""


@dataclass(frozen=True)
class AnalyzeOutcome:
    dictionary: str
    corpus: str
    n_tokens: int
    source: str
    seconds: float
    alive: int
    d_sae: int
    note: str = ""


def _covering_cache(con, model: str, hook: str, corpus: str, n_contexts: int) -> tuple[Path | None, str]:
    """A complete cache of the contexts the corpus holds now, else None; and a note naming a cache skipped
    because it was made from other text."""
    from analysis.activations import stale_reason
    from sae.activations import read_manifest
    from store.models import list_caches

    note = ""
    for cache in list_caches(con):
        if (cache.model, cache.hook, cache.corpus) != (model, hook, corpus) or not cache.complete:
            continue
        manifest = read_manifest(Path(cache.path))
        if manifest is None or not manifest.complete or manifest.contexts_done < n_contexts:
            continue
        stale = stale_reason(con, cache.name, manifest)
        if stale is None:
            return Path(cache.path), ""
        note = f"{stale}: not used, the model runs instead"
    return None, note


def open_site(ws, req: AnalyzeRequest, lm=None, need_codes: bool = False) -> Site:
    """Check the request against the store, the dictionary and the model; nothing is written but the
    `builtin` corpus on first use. need_codes: refuse dictionaries without codes."""
    from analysis.dictionaries import open_dictionary
    from sae.dictionaries import ARCHITECTURES, lookup
    from sae.models import check_hook, hook_output_dim, load_model
    from store import session

    req.check()
    with session(ws.db_path) as con:
        device = req.device if lm is None else next(lm.parameters()).device  # one device: a given model's
        row, sae = open_dictionary(ws, req.dictionary, device, con=con)
        if req.residual_threshold is not None:
            from sae.dictionaries import with_residual_threshold

            with_residual_threshold(sae, req.residual_threshold, row.arch)
        if need_codes and not lookup(row.arch).has_codes:
            coded = " or ".join(a.name for a in ARCHITECTURES.values() if a.has_codes)
            raise InputError(f"dictionary {row.name!r} is a {row.arch} dictionary; this needs a {coded} one")
        if not row.model:
            raise InputError(f"dictionary {row.name!r} does not say which model it reads (it was trained on "
                             "an activation file); analysis needs the model")
    if lm is None:
        lm = load_model(row.model, device=req.device)
    elif lm.cfg.model_name != row.model:
        raise InputError(f"dictionary {row.name!r} reads {row.model}, not {lm.cfg.model_name}")
    check_hook(lm, row.hook)
    width = hook_output_dim(lm, row.hook)
    if width != sae.cfg.d_in:
        raise InputError(f"dictionary {row.name!r} has d_in={sae.cfg.d_in}, but {row.model} gives "
                         f"d={width} at {row.hook}")
    with session(ws.db_path) as con:
        corpus = ensure_corpus(con, req.corpus, row.model, req.tokens)
        if corpus.ctx > lm.cfg.n_ctx:
            raise InputError(f"corpus contexts ({corpus.ctx} tokens) exceed the model's context ({lm.cfg.n_ctx})")
        n_contexts = min(-(-req.tokens // corpus.ctx), corpus.n_contexts)
        tokens = torch.tensor(context_tokens(con, corpus.name, 0, n_contexts), dtype=torch.long)
        cache, note = _covering_cache(con, row.model, row.hook, corpus.name, n_contexts)
        fingerprint = corpus_fingerprint(con, corpus.name)
    return Site(row, sae, lm, corpus, tokens, cache, fingerprint, note)


def site_batches(site: Site, batch: int, contexts: range | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(context ids [n], token ids [n, ctx], activations [n, ctx, d]) in corpus order, `batch` contexts at a
    time, from the cache or the model; `contexts`: only those (a torchrun rank's share), default all."""
    contexts = contexts if contexts is not None else range(site.token_ids.shape[0])
    if site.cache is not None:
        from sae.activation_reader import ActivationReader

        for ids, acts in ActivationReader(site.cache).contexts(max_contexts=contexts.stop, first=contexts.start):
            for i in range(0, len(ids), batch):
                chunk = ids[i:i + batch]
                yield chunk, site.token_ids[chunk], acts[i:i + batch]
        return
    from sae.activations import capture
    from sae.models import stop_layer

    lm, hook = site.model, site.row.hook
    stop = stop_layer(lm, hook)
    with torch.no_grad():
        for lo in range(contexts.start, contexts.stop, batch):
            tokens = site.token_ids[lo:min(lo + batch, contexts.stop)]
            acts = capture(lm, hook, tokens.to(lm.cfg.device), stop).float()
            yield torch.arange(lo, lo + len(tokens)), tokens, acts.view(len(tokens), tokens.shape[1], -1)


def contexts_per_batch(batch: int, ctx: int, d_sae: int) -> int:
    """Contexts encoded at a time: `batch`, or fewer where their activations would exceed ENCODE_BYTES."""
    return max(1, min(batch, ENCODE_BYTES // (4 * ctx * d_sae)))


def open_site_ranked(ws, req: AnalyzeRequest, lm, dist_ctx) -> Site:
    """open_site on rank 0 (checks, and the builtin corpus on first use); the other ranks receive what it read
    and load the dictionary and the model themselves, without touching the store."""
    if dist_ctx.world == 1:
        return open_site(ws, req, lm)
    import torch.distributed as dist

    from analysis.dictionaries import dictionary_folder
    from sae.device import pick_device
    from sae.dictionaries import load_dictionary
    from sae.models import load_model

    site, error = None, None
    if dist_ctx.rank == 0:
        try:
            site = open_site(ws, req, lm)
        except InputError as exc:
            error = exc
    box = [None if site is None else (site.row, site.corpus, site.token_ids, site.cache), error]
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    if site is not None:
        return site
    row, corpus, token_ids, cache = box[0]
    sae = load_dictionary(dictionary_folder(ws, row), device=pick_device(req.device))
    model = lm if lm is not None else load_model(row.model, device=req.device)
    return Site(row, sae, model, corpus, token_ids, cache)


def residual_directions(sae, model, hook: str, features: list[int] | None = None) -> Tensor | None:
    """Decoder directions in the residual stream the unembedding reads ([d_sae, d_model], or only the rows of
    `features`), or None where the hook's space has no linear path to it that we know (q/k/v, attention scores...)."""
    W_dec = sae.W_dec.detach().float()
    if features is not None:
        W_dec = W_dec[features]
    m = re.match(r"blocks\.(\d+)\.(.+)$", hook)
    if hook in ("hook_embed", "hook_pos_embed") or (m and m.group(2) in (
            "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")):
        return W_dec
    if m and m.group(2) == "attn.hook_z":
        W_O = model.blocks[int(m.group(1))].attn.W_O.detach().float()  # [n_heads, d_head, d_model]
        return W_dec.view(W_dec.shape[0], -1) @ W_O.reshape(-1, W_O.shape[-1]).to(W_dec.device)
    if m and m.group(2) == "mlp.hook_post":
        return W_dec @ model.blocks[int(m.group(1))].mlp.W_out.detach().float().to(W_dec.device)
    return None


def vocab_texts(tokenizer, d_vocab: int) -> list[str]:
    """Text of every token id as the tokenizer decodes it alone (ids past the tokenizer's size: '')."""
    size = min(d_vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    return texts + [""] * (d_vocab - size)


def mp_accumulator(sae):
    """The pursuit-step accumulator of an MP dictionary (one column per step it can take)."""
    from analysis.features.pursuit import MPStepAccumulator

    adaptive = getattr(sae.cfg, "adaptive", True) and getattr(sae.cfg, "max_iterations", None)
    steps = (sae.cfg.max_iterations if adaptive else getattr(sae.cfg, "k", None)) or 32
    return MPStepAccumulator(sae.cfg.d_sae, steps, device=sae.W_dec.device)


@torch.no_grad()
def analyse_batch(sae, stats: FeatureStatsAccumulator, mp, ids: Tensor, acts: Tensor, heads=None) -> None:
    """Encode one batch of contexts acts [n, ctx, d] (context ids [n]) and feed the accumulators; mp is
    mp_accumulator(sae) for an MP dictionary, heads head_share_accumulator(...) for a hook_z one, else None."""
    from sae.dictionaries import feature_activations, mp_encode_steps

    n, ctx = acts.shape[:2]
    device = sae.W_dec.device
    x = acts.to(device, torch.float32).reshape(n * ctx, -1)
    keep = (torch.arange(n * ctx, device=device) % ctx) >= SKIP_FIRST
    if mp is not None:
        found = mp_encode_steps(sae, x)
        f = found.feature_acts
        mp.update(_pad_steps(found.atom_ids[keep], mp.k), found.n_steps[keep])
    else:
        f = feature_activations(sae, x)
    if heads is not None:
        heads.update(x, f, keep)
    stats.update(f.float().view(n, ctx, -1), ids)


def _pad_steps(atom_ids: Tensor, k: int) -> Tensor:
    if atom_ids.shape[1] >= k:
        return atom_ids[:, :k]
    pad = atom_ids.new_full((atom_ids.shape[0], k - atom_ids.shape[1]), -1)
    return torch.cat([atom_ids, pad], dim=1)


def stats_memory(d_sae: int, cfg: StatsConfig) -> int:
    """A lower bound of the bytes one pass holds: running sums, and the top and band examples it materialises
    per feature at the end (the firing log and the sparse co-occurrence grow with the corpus on top of this)."""
    slot = 4 * (2 * cfg.window + 1) + 32
    return d_sae * (24 + slot * cfg.n_examples * (1 + cfg.n_quantiles))


def analyze_dictionary(ws, req: AnalyzeRequest, lm=None, progress: bool = True) -> AnalyzeOutcome | None:
    """Run the pass and replace the dictionary's results in the store (one transaction).

    Under torchrun each rank reads a contiguous share of the contexts; rank 0 merges every rank's accumulators
    (analysis.features.distributed), finishes and writes; the other ranks write nothing and return None.
    """
    from sae.training import init_distributed

    dist_ctx = init_distributed()
    try:
        return _analyze(ws, req, lm, progress, dist_ctx)
    finally:
        if dist_ctx.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _analyze(ws, req: AnalyzeRequest, lm, progress: bool, dist_ctx) -> AnalyzeOutcome | None:
    from analysis.features.head_shares import head_share_accumulator
    from sae.device import require_memory
    from sae.dictionaries import arch_of

    t0 = time.perf_counter()
    site = open_site_ranked(ws, req, lm, dist_ctx)
    sae = site.sae
    cfg = StatsConfig(n_examples=req.examples, n_quantiles=req.quantiles, skip_first=SKIP_FIRST)
    require_memory(stats_memory(sae.cfg.d_sae, cfg), f"--examples {req.examples} and --quantiles "
                   f"{req.quantiles} for {sae.cfg.d_sae:,} features", sae.W_dec.device)
    stats = FeatureStatsAccumulator(sae.cfg.d_sae, cfg, device=sae.W_dec.device)
    mp = mp_accumulator(sae) if arch_of(sae).has_pursuit_steps else None
    heads = head_share_accumulator(sae, site.model, site.row.hook)
    _read_share(site, req, stats, mp, dist_ctx, progress, heads)
    if dist_ctx.world > 1:
        from analysis.features.distributed import merge_into_rank0

        merge_into_rank0(stats, mp, heads)
        if dist_ctx.rank != 0:
            return None
    result = stats.finish()
    del stats  # the firing log (the largest part of the accumulators) is not needed any more
    source = _write_results(ws, req, site, cfg, result, mp, heads)
    return AnalyzeOutcome(req.dictionary, site.corpus.name, result.n_tokens, source,
                          time.perf_counter() - t0, int((result.count > 0).sum()), sae.cfg.d_sae, site.note)


def _read_share(site: Site, req: AnalyzeRequest, stats: FeatureStatsAccumulator, mp, dist_ctx,
                progress: bool, heads=None) -> None:
    """Encode this rank's share of the contexts and feed the accumulators."""
    from tqdm.auto import tqdm

    from analysis.features.distributed import share

    n_ctx, ctx = site.token_ids.shape
    batch = contexts_per_batch(req.batch, ctx, site.sae.cfg.d_sae)
    contexts = share(n_ctx, dist_ctx.rank, dist_ctx.world, batch)
    bar = tqdm(total=len(contexts) * ctx, unit="tok", unit_scale=True, desc=f"analyse {req.dictionary}",
               disable=not progress or dist_ctx.rank != 0)
    stats.ctx_len = ctx  # also on a rank whose share is empty, so merged logs agree on token ids
    with torch.no_grad():
        for ids, _, acts in site_batches(site, batch, contexts):
            analyse_batch(site.sae, stats, mp, ids, acts, heads)
            bar.update(len(ids) * ctx)
            crash_point("analyze.batch")
    bar.close()


def _write_results(ws, req: AnalyzeRequest, site: Site, cfg: StatsConfig, result, mp, heads=None) -> str:
    """The weight statistics, then every table in one transaction; returns where the activations came from."""
    from analysis.features.tables import feature_tables
    from analysis.features.weights import decoder_neighbors, final_norm_map, logit_effects
    from store import session
    from store.features import has_vocab, write_feature_stats, write_vocab

    sae, model = site.sae, site.model
    W_dec = sae.W_dec.detach().float()
    directions = residual_directions(sae, model, site.row.hook)
    logits = (logit_effects(directions, model.W_U.detach(), final_norm_map(model), top=10)
              if directions is not None else None)
    with session(ws.db_path) as con:
        need_vocab = not has_vocab(con, site.row.model)
    vocab = vocab_texts(model.tokenizer, model.cfg.d_vocab) if (need_vocab or logits is not None) else None
    tables = feature_tables(result, site.corpus.name, decoder_norm=W_dec.norm(dim=1),
                            neighbors=decoder_neighbors(W_dec, cfg.n_neighbors), logits=logits, vocab=vocab,
                            mp=mp.finish() if mp is not None else None)
    if heads is not None:
        tables["feature_heads"] = heads.finish()
    source = f"cache {site.cache.name}" if site.cache is not None else f"{site.row.model} forward"
    config = {"examples": req.examples, "quantiles": req.quantiles, "skip_first": SKIP_FIRST,
              "window": cfg.window, "source": source, "cooccurrence": result.cooc_ids is not None}
    with session(ws.db_path) as con:
        if need_vocab:
            write_vocab(con, site.row.model, vocab)
        write_feature_stats(con, req.dictionary, site.corpus.name, tables, n_tokens=result.n_tokens,
                            model=site.row.model, config=config, corpus_fingerprint=site.fingerprint)
    return source


def search_codes(ws, req: AnalyzeRequest, regex: str, limit: int = 20, lm=None, progress: bool = True):
    """The codes of a codebook dictionary ranked by precision (with recall) for positions whose token text
    matches `regex`, over the request's contexts (the Codebook Features paper's code search)."""
    from tqdm.auto import tqdm

    from analysis.features.codes import check_regex, search_batches

    check_regex(regex)
    site = open_site(ws, req, lm, need_codes=True)
    vocab = vocab_texts(site.model.tokenizer, site.model.cfg.d_vocab)
    n_ctx, ctx = site.token_ids.shape
    bar = tqdm(total=n_ctx * ctx, unit="tok", unit_scale=True, desc="code search", disable=not progress)
    batches = ((tokens, acts) for _, tokens, acts in site_batches(site, req.batch))
    try:
        return search_batches(site.sae, batches, vocab, regex, limit=limit, skip_first=SKIP_FIRST,
                              on_batch=lambda n: bar.update(n * ctx))
    finally:
        bar.close()
