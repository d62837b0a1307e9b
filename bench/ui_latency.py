"""Server-side time to build the feature page's data on a store the size of a real dictionary.

    python bench/ui_latency.py [--quick] [--features 50000] [--examples 20]

Builds the synthetic store of bench/feature_card.py (50,000 features), registers the dictionary, then times,
for random features, what the feature page does on a cold cache (every st.cache_data entry missed):
fingerprint the store files, read the analysed dictionaries (the page's picker), read the feature's page
(range check, dictionary row, feature_card), and build the highlighted HTML of every example. Reads go
through the UI's read pool (app/ui/data/readers.py), which lets the store go after 2 s idle: every fifth view
is timed after the pool let go, so it pays for opening the store (p95_ms_after_idle); p95_ms covers all
views. Wall times on a shared machine swing with its
load, so the line also gives the CPU time per view (all threads, cpu_p95_ms) and the load average, and
feature_card's own p95 for reference.

Search by text: a workspace with 3 dictionaries of the demo's shape (TopK, MP and codebook, 4,608 features, at
the demo's hook of the embedded model, weights freshly initialised), then what the Search page computes on a cold
cache for a 64-token text: the forward pass, the encoding by every dictionary, the ranking, and the labels and
densities read from the store. The model and dictionaries are loaded before timing, as the UI holds them
(st.cache_resource). --search-model picks another model (tiny-random for a quick look without the embedded one).

Prints one JSON line:
{"bench": "ui_latency", "p95_ms": ..., "search_text_s": ..., "ok": ...}
(targets: feature page p95 < 100 ms, search by text < 1 s)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.feature_card import build  # noqa: E402  (the same synthetic store, not a copy of its generator)

TARGET_MS = 100.0
SEARCH_TARGET_S = 1.0
SEARCH_TOKENS = 64
SEARCH_HOOK = "blocks.6.hook_resid_post"
"""The demo's hook (app/commands/demo.py, which bench scripts do not import)."""
SEARCH_DICTIONARIES = (("bench-topk", "topk", 32), ("bench-mp", "mp", 32), ("bench-codebook", "codebook", 8))
"""(name, arch, k) at 4,608 features each, as the demo trains them."""
SEARCH_TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lantern and a "
               "notebook in which he wrote down the ships he saw, the colour of the sea and the direction of the "
               "wind, because his grandfather had taught him that a careful record outlives any single memory.")


def _quiet_streamlit() -> None:
    """The cache module is imported outside `streamlit run`; keep its 'no runtime' warnings off the output."""
    from streamlit import config, logger

    config.set_option("logger.level", "error")
    logger.set_log_level("error")


def register(path: Path, n_feat: int) -> None:
    from store import session
    from store.dictionaries import DictionaryRow, add_dictionary, set_metrics

    with session(path) as con:
        add_dictionary(con, DictionaryRow("bench-dict", "bench-model", "blocks.0.hook_resid_post", "topk", 576,
                                          n_feat, 32, str(path.parent / "bench-dict")))
        set_metrics(con, "bench-dict", {"l0": 32.0, "fvu": 0.2, "ce_recovered": 0.9})


def page_data(cache, widgets, db: str, feature: int) -> int:
    """What one feature page view computes server-side when nothing is cached; returns the HTML size."""
    cache.version(db)
    cache._read(db, cache._analysed)
    page = cache._read(db, cache._feature_page, "bench-dict", feature)
    card = page.card
    return sum(len(widgets.example_html(e, card.max_act)) for e in card.top_examples + card.quantile_examples)


def search_workspace(root: Path, model):
    """A workspace with SEARCH_DICTIONARIES on `model` at SEARCH_HOOK (the last layer of a smaller model)."""
    from sae.models import hook_output_dim
    from store import Workspace, session
    from store.dictionaries import DictionaryRow, add_dictionary
    from tests.factories import saved_dictionary

    n_layers = model.cfg.n_layers
    hook = SEARCH_HOOK if n_layers > 6 else f"blocks.{n_layers - 1}.hook_resid_post"
    d_in, name = hook_output_dim(model, hook), model.cfg.model_name
    ws = Workspace.resolve(root)
    with session(ws.db_path) as con:
        for dictionary, arch, k in SEARCH_DICTIONARIES:
            folder = saved_dictionary(ws.dictionaries_dir / dictionary, arch=arch, d_in=d_in, d_sae=4608, k=k,
                                      hook_name=hook, model_name=name)
            add_dictionary(con, DictionaryRow(dictionary, name, hook, arch, d_in, 4608, k, str(folder)))
    return ws


def search_times(model_name: str | None, repeats: int, threads: int | None = None) -> dict:
    """Seconds the Search page takes for a SEARCH_TOKENS-token text over SEARCH_DICTIONARIES (median and worst
    of `repeats` cold searches, and the median CPU time of all threads), model and dictionaries already loaded."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from analysis.dictionaries import open_dictionary
    from analysis.features.search_text import search_text
    from app.ui.data import cache
    from app.ui.data import search as search_data
    from sae.models import DEFAULT_MODEL, load_model

    torch.manual_seed(0)
    model = load_model(model_name or DEFAULT_MODEL)
    ids = model.to_tokens(SEARCH_TEXT * 4)[0]
    first = 1 if model.cfg.default_prepend_bos else 0
    texts = [model.tokenizer.decode(ids[first + i:first + i + SEARCH_TOKENS - first].tolist()) for i in range(repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        ws = search_workspace(Path(tmp) / "ws", model)
        opened = [open_dictionary(ws, name) for name, _, _ in SEARCH_DICTIONARIES]
        saes = {row.name: (row.hook, sae) for row, sae in opened}
        db = str(ws.db_path)
        search_text(model, texts[0], saes)  # warm-up: first calls allocate
        times, cpu, n_tokens = [], [], []
        for text in texts:
            t0, c0 = time.perf_counter(), time.process_time()
            result = search_text(model, text, saes)
            wanted = tuple((name, tuple(f)) for name, f in result.features().items())
            cache._read(db, search_data._notes, wanted)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            n_tokens.append(len(result.tokens))
        cache.READERS.close_all()
    return {"search_text_s": round(float(np.median(times)), 3), "search_text_max_s": round(max(times), 3),
            "search_text_cpu_s": round(float(np.median(cpu)), 3),
            "search_model": model.cfg.model_name, "search_tokens": int(np.median(n_tokens)),
            "search_dictionaries": len(saes), "search_torch_threads": torch.get_num_threads(),
            "search_ok": bool(np.median(times) < SEARCH_TARGET_S)}


def p95_ms(times: list[float]) -> float:
    return round(float(np.percentile(np.array(times) * 1000, 95)), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed page views (same store size)")
    parser.add_argument("--features", type=int, default=50_000)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--search-model", default=None, help="model of the search-by-text timing (default: the "
                                                             "embedded one)")
    parser.add_argument("--search-threads", type=int, default=None, help="torch threads of the search timing "
                                                                         "(default: torch's own choice)")
    args = parser.parse_args()
    n_views = 60 if args.quick else 200
    _quiet_streamlit()
    from app.ui.data import cache, readers
    from app.ui.widgets import common as widgets
    from store.queries import feature_card

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sparsescope.duckdb"
        t0 = time.perf_counter()
        build(path, args.features, args.examples)
        register(path, args.features)
        build_s = time.perf_counter() - t0
        db = str(path)
        page_data(cache, widgets, db, 0)  # warm-up: the OS file cache, as on a server that has run a while
        rng = np.random.default_rng(2)
        views, after_idle, cards, cpu = [], [], [], []
        for i, feature in enumerate(rng.integers(0, args.features, n_views).tolist()):
            idle = i % 5 == 4  # every fifth view comes after the pool let the store go (user idle > 2 s)
            if idle:
                readers.READERS.close(db)
            t0, c0 = time.perf_counter(), time.process_time()
            assert page_data(cache, widgets, db, feature) > 0
            (after_idle if idle else views).append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            with readers.READERS.cursor(db, 1.0) as con:  # the store's own part, for reference
                t0 = time.perf_counter()
                feature_card(con, "bench-dict", feature)
                cards.append(time.perf_counter() - t0)
        readers.READERS.close_all()
    search = search_times(args.search_model, 3 if args.quick else 10, args.search_threads)
    p95 = p95_ms(views + after_idle)
    print(json.dumps({"bench": "ui_latency", "p95_ms": p95,
                      "median_ms": round(float(np.median(views + after_idle)) * 1000, 2),
                      "p95_ms_open_store": p95_ms(views), "p95_ms_after_idle": p95_ms(after_idle),
                      "feature_card_p95_ms": p95_ms(cards), "cpu_p95_ms": p95_ms(cpu),
                      "load_avg_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
                      "views": n_views, "features": args.features, "build_s": round(build_s, 1),
                      **search, "ok": bool(p95 < TARGET_MS and search["search_text_s"] < SEARCH_TARGET_S)}))


if __name__ == "__main__":
    main()
