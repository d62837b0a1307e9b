"""The Attribution page's reads and model work, cached: the stored graphs (`sparsescope attribute`), one graph's
document, the labels and explanations of the features its nodes name (for the hover), and one node ablated and the
model rerun (analysis.attribution.ablate_node) on the shared model inside cache.using_model (its lock), with the
dictionaries from cache.dictionary (name + weights stamp), all on the device both load on."""
from __future__ import annotations

import re

import duckdb
import streamlit as st

from analysis.graph_view import feature_notes
from app.ui.data import cache
from store import graphs as repo
from store.dictionaries import DictionaryRow, list_dictionaries
from store.errors import InputError


def _list(con) -> list[repo.GraphRow]:
    try:
        return repo.list_graphs(con)
    except duckdb.CatalogException:  # a store from before the graphs migration: `sparsescope ui` migrates on start
        return []


@st.cache_data(show_spinner=False, max_entries=32)
def graphs(db: str, version: tuple) -> list[repo.GraphRow]:
    """Every stored graph, newest first."""
    return cache._read(db, _list)


def _one(con, graph_id: int) -> tuple[repo.GraphRow, dict]:
    found = repo.get_graph(con, graph_id)
    if found is None:
        stored = [str(g.id) for g in repo.list_graphs(con)]
        raise InputError(f"no graph {graph_id} in the store (stored: {', '.join(stored) or 'none'})")
    return found


@st.cache_data(show_spinner=False, max_entries=32)
def graph(db: str, version: tuple, graph_id: int) -> tuple[repo.GraphRow, dict]:
    """One graph's row and its document (InputError for an id the store lacks)."""
    return cache._read(db, _one, graph_id)


@st.cache_data(show_spinner=False, max_entries=64)
def notes(db: str, version: tuple, wanted: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[tuple[str, int], str]:
    """(dictionary, feature) -> its label and explanations joined ("label · explanation"), for ((dictionary,
    features), ...); features with neither are left out."""
    return cache._read(db, feature_notes, wanted)


# ------------------------------------------------------------------------------------------- ablate a node and rerun

def _rows(con, names: tuple[str, ...]) -> tuple[DictionaryRow, ...]:
    found = {row.name: row for row in list_dictionaries(con)}
    missing = [name for name in names if name not in found]
    if missing:
        raise InputError(f"the graph's dictionaries {', '.join(missing)} are no longer in the store: the node cannot "
                         "be ablated without them")
    return tuple(found[name] for name in names)


@st.cache_data(show_spinner=False, max_entries=32)
def dictionary_rows(db: str, version: tuple, names: tuple[str, ...]) -> tuple[DictionaryRow, ...]:
    """The store rows of the graph's dictionaries, in its order (InputError naming those the store lacks)."""
    return cache._read(db, _rows, names)


def _contexts(con, corpus: str, n: int) -> tuple[tuple[int, ...], ...]:
    from analysis.attribution import corpus_contexts

    return tuple(tuple(int(t) for t in ctx) for ctx in corpus_contexts(con, corpus, n).tolist())


@st.cache_data(show_spinner=False, max_entries=8)
def contexts(db: str, version: tuple, corpus: str, n: int) -> tuple[tuple[int, ...], ...]:
    """The corpus's first n contexts, which the mean baseline averages over (InputError for a corpus gone)."""
    return cache._read(db, _contexts, corpus, n)


def mean_corpus(metadata: dict) -> tuple[str, int]:
    """(corpus, contexts) the graph's mean baseline was taken over: the metadata's, else (graphs stored before it
    named them) read from its baseline words "mean over N tokens of corpus NAME" with the default context count."""
    from analysis.attribution.run import MEAN_CONTEXTS

    if metadata.get("corpus"):
        return metadata["corpus"], int(metadata.get("corpus_contexts") or MEAN_CONTEXTS)
    words = re.fullmatch(r"mean over [\d,]+ tokens of corpus (.+)", metadata.get("baseline") or "")
    if words is None or words.group(1) == "(given)":
        raise InputError("the graph does not say which corpus its mean baseline was taken over; make it again "
                         "with `sparsescope attribute`")
    return words.group(1), MEAN_CONTEXTS


@st.cache_data(show_spinner=False, max_entries=64)
def _ablation(model_name: str, dictionaries: tuple[tuple[str, str, str, int], ...], prompt: str, target: str,
              contrast: str | None, ablation: str, corpus_ids: tuple[tuple[int, ...], ...], dictionary: str,
              feature: int | None, pos: int):
    import torch

    from analysis.attribution import ablate_node, make_baseline, make_sites, prompt_tokens, site_index, target_ids

    saes = [(name, of, hook, cache.dictionary(name, stamp)) for name, of, hook, stamp in dictionaries]
    with cache.using_model(model_name) as lm:
        sites = make_sites(lm, saes)
        tokens = prompt_tokens(lm, prompt).to(lm.cfg.device)
        tid, cid = target_ids(lm, target, contrast)
        corpus = torch.tensor(corpus_ids, dtype=torch.long) if ablation == "mean" else None
        baseline = make_baseline(lm, sites, ablation, corpus)
        return ablate_node(lm, tokens, sites, tid, cid, baseline, site_index(sites, dictionary), feature, pos)


def ablate(row: repo.GraphRow, graph: dict, node: dict):
    """analysis.attribution.NodeAblation of a feature or error node of a stored graph: the graph's model, prompt,
    target, contrast, dictionaries and baseline (mean over the same corpus contexts, or zero). Bad input (the
    dictionaries gone from the store, a model that cannot be loaded) raises InputError or stops the page with one
    st.error line."""
    names = tuple(graph["metadata"].get("dictionaries") or row.dictionaries)
    rows = cache.fetch(dictionary_rows, names)
    dictionaries = []
    for r in rows:
        stamp = cache.stamp(r.path)
        if not stamp:
            raise InputError(f"dictionary {r.name!r}: its weights are missing from {r.path}")
        dictionaries.append((r.name, r.model, r.hook, stamp))
    corpus_ids = ()
    if row.ablation == "mean":
        corpus_ids = cache.fetch(contexts, *mean_corpus(graph["metadata"]))
    feature = None if node["feature_type"] == "error" else int(node["feature"])
    return _ablation(row.model, tuple(dictionaries), row.prompt, row.target, row.contrast, row.ablation, corpus_ids,
                     node["dictionary"], feature, int(node["ctx_idx"]))
