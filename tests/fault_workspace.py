"""The fault-injection suite's base workspace (tests/faults/): a corpus, an activation cache over it and a trained
dictionary on the tiny model. Built once per session (tests/faults/conftest.py); each test works on a copy
(tests.helpers.copy_workspace)."""
from __future__ import annotations

from pathlib import Path

HOOK = "blocks.0.hook_resid_post"
CACHE = f"tiny-random__{HOOK}__t"
TRAIN = ("--arch", "topk", "--activations", CACHE, "--d-sae", "64", "--k", "4", "--tokens", "1536", "--batch",
         "128", "--lr", "0.01", "--checkpoint-every", "2")
"""A `train` of 12 steps, checkpointed every 2."""


def build_fault_workspace(root: Path, model) -> Path:
    """At `root`: corpus `t` (about 1,000 contexts of 16 tokens), the cache CACHE over all of it and the topk
    dictionary `tk` trained on the cache."""
    from analysis.activations import build_cache
    from analysis.corpora import add_corpus
    from analysis.training import TrainRequest, train_in_workspace
    from store import Workspace, session

    ws = Workspace.resolve(root)
    text = ws.root.parent / "t.txt"
    text.write_text("".join(f"Line {i} of the test corpus says something new: {i * 7 % 13}.\n\n" for i in range(300)))
    with session(ws.db_path) as con:
        add_corpus(con, "t", str(text), "tiny-random", ctx=16)
    build_cache(ws, None, model, HOOK, "t", tokens=10 ** 6, progress=False)
    train_in_workspace(ws, TrainRequest(arch="topk", activations=CACHE, name="tk", d_sae=64, k=4, tokens=1024,
                                        batch=128, lr=1e-2), lm=model, progress=False)
    return ws.root
