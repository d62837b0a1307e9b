"""Server-side time to build the feature page's data on a store the size of a real dictionary, of a search by
text, and of the feature page while a job runs and the Jobs page polls.

    python bench/ui_latency.py [--quick] [--features 50000] [--examples 20] [--workspace DIR [--search-dicts A,B,C]]
                               [--search-model NAME] [--search-threads N [N ...]] [--no-jobs]

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
--workspace DIR searches with the dictionaries of a real workspace instead (--search-dicts, default the demo's
demo-topk, demo-mp and demo-codebook, on their own model); the workspace is only read. --search-threads takes one
or more torch thread counts: each is timed (p50 and p95 of the cold searches, in search_runs), the first gives the
headline figures.

Jobs polling: the synthetic store is the store of a scratch workspace in which a real job runs, a `train` on the
tiny model started through the Jobs page's own launcher (app.ui.data.jobs.start: the wrapper process running the
CLI). The feature page's data build is timed with no job (before the job starts and after it ended), while the job
runs, and while the job runs AND the Jobs page's poll (app.ui.data.jobs.running, all its fragment reads) runs every
POLL_S in a thread of this process, as the server runs the fragment beside other sessions' pages (beside the job,
blocks of BLOCK views with the polling off and on in turn, so both see the same drift of the load). The line gives
each p95 and the ratios: polling_ratio (job and polling against no job) and polling_only_ratio (job and polling
against the job alone: what polling itself costs). --no-jobs skips this part.

Prints one JSON line:
{"bench": "ui_latency", "p95_ms": ..., "search_text_s": ..., "polling_ratio": ..., "ok": ...}
(targets: feature page p95 < 100 ms, search by text < 1 s; ok covers these two, the polling ratios are reported
with the load average, which moves them on a shared machine)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
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
DEMO_DICTIONARIES = ("demo-topk", "demo-mp", "demo-codebook")
"""What `sparsescope demo` trains (app/commands/demo.py), searched in a --workspace by default."""
JOB_TRAIN = {"arch": "topk", "model": "tiny-random", "hook": "blocks.0.hook_resid_post", "tokens": "50000000",
             "batch": "256", "name": "bench-job", "device": "cpu", "checkpoint_every": "0"}
"""The Jobs page's train form for the polling timing: long enough to outlast it (it is cancelled after)."""
BLOCK = 25
"""Feature page views in a row with the Jobs page's polling on (then off, then on...) while the job runs."""
JOB_START_S = 180.0
"""Longest wait for the job's training to report progress (the wrapper and the CLI import torch first)."""
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


def _timed_searches(model, texts: list[str], saes: dict, db: str) -> dict:
    """p50, p95 and worst seconds (and the median CPU time of all threads) of a cold search of each text."""
    from analysis.features.search_text import search_text
    from app.ui.data import cache
    from app.ui.data import search as search_data

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
    return {"p50_s": round(float(np.median(times)), 3), "p95_s": round(float(np.percentile(times, 95)), 3),
            "max_s": round(max(times), 3), "cpu_s": round(float(np.median(cpu)), 3),
            "tokens": int(np.median(n_tokens)), "load_avg_1min": round(os.getloadavg()[0], 1)}


def real_dictionaries(workspace: str, names: list[str]):
    """(model name, [(store row, dictionary)], store path) of `names` in a real workspace, which is only read."""
    from analysis.dictionaries import open_dictionary
    from store import Workspace
    from store.errors import InputError

    ws = Workspace.resolve(workspace, create=False)
    if not ws.db_path.exists():
        raise InputError(f"no store in workspace {ws.root}")
    opened = [open_dictionary(ws, name) for name in names]
    models = {row.model for row, _ in opened}
    if len(models) != 1 or None in models:
        raise InputError(f"the dictionaries {', '.join(names)} are not of one known model")
    return models.pop(), opened, str(ws.db_path)


def search_times(model_name: str | None, repeats: int, threads: list[int], workspace: str | None = None,
                 names: list[str] | None = None) -> dict:
    """Seconds the Search page takes for a SEARCH_TOKENS-token text over 3 dictionaries (SEARCH_DICTIONARIES made
    here, or `names` of a real `workspace`) at each torch thread count of `threads`, model and dictionaries
    already loaded; the first thread count gives the headline figures."""
    import torch

    from analysis.dictionaries import open_dictionary
    from app.ui.data import cache
    from sae.models import DEFAULT_MODEL, load_model

    with tempfile.TemporaryDirectory() as tmp:
        if workspace:
            model_name, opened, db = real_dictionaries(workspace, names or list(DEMO_DICTIONARIES))
        torch.manual_seed(0)
        model = load_model(model_name or DEFAULT_MODEL)
        if not workspace:
            ws = search_workspace(Path(tmp) / "ws", model)
            opened, db = [open_dictionary(ws, name) for name, _, _ in SEARCH_DICTIONARIES], str(ws.db_path)
        saes = {row.name: (row.hook, sae) for row, sae in opened}
        ids = model.to_tokens(SEARCH_TEXT * 4)[0]
        first = 1 if model.cfg.default_prepend_bos else 0
        texts = [model.tokenizer.decode(ids[first + i:first + i + SEARCH_TOKENS - first].tolist())
                 for i in range(repeats)]
        runs = []
        for n in threads:
            torch.set_num_threads(n)
            runs.append({"threads": torch.get_num_threads(), **_timed_searches(model, texts, saes, db)})
        cache.READERS.close_all()
    head = runs[0]
    return {"search_text_s": head["p50_s"], "search_text_p95_s": head["p95_s"], "search_text_max_s": head["max_s"],
            "search_text_cpu_s": head["cpu_s"], "search_torch_threads": head["threads"], "search_runs": runs,
            "search_model": model.cfg.model_name, "search_tokens": head["tokens"],
            "search_dictionaries": sorted(saes), "search_workspace": workspace, "search_repeats": repeats,
            "search_ok": bool(head["p50_s"] < SEARCH_TARGET_S)}


def p95_ms(times: list[float]) -> float:
    return round(float(np.percentile(np.array(times) * 1000, 95)), 2)


def time_views(cache, readers, widgets, db: str, features: list[int]) -> dict[str, list[float]]:
    """Wall and CPU seconds of the feature page's data build for each feature (every fifth after the read pool
    let the store go), and feature_card's own time."""
    from store.queries import feature_card

    out: dict[str, list[float]] = {"views": [], "after_idle": [], "cpu": [], "cards": []}
    for i, feature in enumerate(features):
        idle = i % 5 == 4  # every fifth view comes after the pool let the store go (user idle > 2 s)
        if idle:
            readers.READERS.close(db)
        t0, c0 = time.perf_counter(), time.process_time()
        assert page_data(cache, widgets, db, feature) > 0
        out["after_idle" if idle else "views"].append(time.perf_counter() - t0)
        out["cpu"].append(time.process_time() - c0)
        with readers.READERS.cursor(db, 1.0) as con:  # the store's own part, for reference
            t0 = time.perf_counter()
            feature_card(con, "bench-dict", feature)
            out["cards"].append(time.perf_counter() - t0)
    return out


class Poller(threading.Thread):
    """The Jobs page's fragment: app.ui.data.jobs.running() every POLL_S while `on` is set (the time of each poll
    is kept)."""

    def __init__(self) -> None:
        super().__init__(name="jobs-poll", daemon=True)
        self.on, self.stop, self.times, self.seen = threading.Event(), threading.Event(), [], 0

    def run(self) -> None:
        from app.ui.data import jobs

        while not self.stop.is_set():
            if not self.on.wait(0.05):
                continue
            t0 = time.perf_counter()
            self.seen = max(self.seen, len(jobs.running()))
            self.times.append(time.perf_counter() - t0)
            self.stop.wait(jobs.POLL_S)


def _wait_for(test, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not test():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: {what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.5)


def polling_effect(cache, readers, widgets, root: Path, features: list[int]) -> dict:
    """The feature page's p95 in the workspace `root` (its store the synthetic one) with no job, while a real
    train job runs, and while it runs and the Jobs page polls; the job is cancelled at the end."""
    from app.ui.data import jobs

    db = str(root / "sparsescope.duckdb")
    os.environ["SPARSESCOPE_WORKSPACE"] = str(root)
    # a sixth before the job and a sixth after it; beside the job, blocks of BLOCK views with the polling off and
    # on in turn, so that both see the same drift of the machine's load
    n = len(features)
    before, beside, after = np.array_split(features, [n // 6, n - n // 6])
    quiet = time_views(cache, readers, widgets, db, before.tolist())
    job = jobs.start("train", JOB_TRAIN)

    def now():
        return next(j for j in jobs.jobs() if j.id == job.id)

    def training() -> bool:
        done = jobs.progress(now())
        return bool(done and done.n) or not now().active

    _wait_for(training, JOB_START_S, "the train job's progress")
    if not now().active:
        raise RuntimeError(f"bench: the train job ended early: {now().message}")
    poller = Poller()
    poller.start()
    alone, both = [], []
    blocks = max(2, len(beside) // BLOCK)
    for i, block in enumerate(np.array_split(beside, blocks + blocks % 2)):  # as many blocks on as off
        (poller.on.set if i % 2 else poller.on.clear)()
        timed = time_views(cache, readers, widgets, db, block.tolist())
        (both if i % 2 else alone).extend(timed["views"] + timed["after_idle"])
    poller.stop.set()
    poller.join()
    still_running = now().active
    jobs.cancel(now())
    _wait_for(lambda: not now().active, 60.0, "the train job's end after cancel")
    quiet_after = time_views(cache, readers, widgets, db, after.tolist())
    none = quiet["views"] + quiet["after_idle"] + quiet_after["views"] + quiet_after["after_idle"]
    return {"no_job_p95_ms": p95_ms(none), "job_p95_ms": p95_ms(alone), "job_polling_p95_ms": p95_ms(both),
            "polling_ratio": round(p95_ms(both) / p95_ms(none), 2),
            "polling_only_ratio": round(p95_ms(both) / p95_ms(alone), 2),
            "polls": len(poller.times), "poll_p95_ms": p95_ms(poller.times) if poller.times else None,
            "poll_s": jobs.POLL_S, "polled_jobs": poller.seen, "job_ran_throughout": still_running,
            "job_outcome": now().status, "views_per_phase": [len(none), len(alone), len(both)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed page views and searches (same sizes)")
    parser.add_argument("--features", type=int, default=50_000)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--workspace", default=None, help="search with the dictionaries of this workspace (only "
                                                          "read) instead of fresh ones")
    parser.add_argument("--search-dicts", default=",".join(DEMO_DICTIONARIES),
                        help="dictionaries of --workspace to search (comma-separated, one model)")
    parser.add_argument("--search-model", default=None, help="model of the search-by-text timing without "
                                                             "--workspace (default: the embedded one)")
    parser.add_argument("--search-threads", type=int, nargs="+", default=[0], help="torch threads of the search "
                        "timing, one or more counts (0: torch's own choice); the first is the headline figure")
    parser.add_argument("--no-jobs", action="store_true", help="skip the feature page timing beside a running job")
    args = parser.parse_args()
    n_views = 60 if args.quick else 200
    _quiet_streamlit()
    import torch

    from app.ui.data import cache, readers
    from app.ui.widgets import common as widgets
    from store.errors import InputError

    threads = [n or torch.get_num_threads() for n in args.search_threads]
    try:  # first: a workspace without its store or the dictionaries asked for stops the bench at once
        search = search_times(args.search_model, 5 if args.quick else 20, threads, args.workspace,
                              [n for n in args.search_dicts.split(",") if n])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        path = root / "sparsescope.duckdb"
        t0 = time.perf_counter()
        build(path, args.features, args.examples)
        register(path, args.features)
        build_s = time.perf_counter() - t0
        db = str(path)
        page_data(cache, widgets, db, 0)  # warm-up: the OS file cache, as on a server that has run a while
        rng = np.random.default_rng(2)
        timed = time_views(cache, readers, widgets, db, rng.integers(0, args.features, n_views).tolist())
        polling = {} if args.no_jobs else polling_effect(
            cache, readers, widgets, root, rng.integers(0, args.features, 2 * n_views).tolist())
        readers.READERS.close_all()
    views, after_idle = timed["views"], timed["after_idle"]
    p95 = p95_ms(views + after_idle)
    print(json.dumps({"bench": "ui_latency", "p95_ms": p95,
                      "median_ms": round(float(np.median(views + after_idle)) * 1000, 2),
                      "p95_ms_open_store": p95_ms(views), "p95_ms_after_idle": p95_ms(after_idle),
                      "feature_card_p95_ms": p95_ms(timed["cards"]), "cpu_p95_ms": p95_ms(timed["cpu"]),
                      "load_avg_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
                      "views": n_views, "features": args.features, "build_s": round(build_s, 1),
                      **search, **polling,
                      "ok": bool(p95 < TARGET_MS and search["search_text_s"] < SEARCH_TARGET_S)}))


if __name__ == "__main__":
    main()
