"""How browsable a workspace's dictionaries are: the figures of the README's demo table, one JSON line each.

    python bench/demo_quality.py [WORKSPACE] [--dictionaries demo-topk,demo-mp,demo-codebook]

Per dictionary, from the store (nothing is recomputed): its evaluation (L0, FVU, CE recovered, dead share) and,
from its feature analysis, the share of features that never fired and the share of features whose top examples
all fire on one and the same token (store.features.feature_quality). Prints
{"dictionary": ..., "arch": ..., "train_tokens": ..., "l0": ..., "fvu": ..., "ce_recovered": ..., "dead": ...,
 "never_fired": ..., "one_token": ..., "with_top": ...}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store import InputError, Workspace, connect  # noqa: E402
from store.dictionaries import get_dictionary, get_metrics  # noqa: E402
from store.features import feature_quality  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", nargs="?", default="workspace")
    ap.add_argument("--dictionaries", default="demo-topk,demo-mp,demo-codebook")
    args = ap.parse_args()
    space = Workspace.resolve(args.workspace, create=False)
    if not space.db_path.exists():
        print(f"error: no store in {space.root}", file=sys.stderr)
        return 2
    con = connect(space.db_path, read_only=True)
    try:
        for name in args.dictionaries.split(","):
            row = get_dictionary(con, name)
            if row is None:
                raise InputError(f"no dictionary {name!r} in {space.root}")
            metrics = get_metrics(con, name)
            trained = con.execute("SELECT max(tokens) FROM training_log WHERE dictionary = ?", [name]).fetchone()[0]
            line = {"dictionary": name, "arch": row.arch, "train_tokens": trained,
                    **{m: _round(metrics.get(m)) for m in ("l0", "fvu", "ce_recovered", "dead")},
                    **{k: _round(v) for k, v in feature_quality(con, name).items() if k != "features"}}
            print(json.dumps(line), flush=True)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    return 0


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    sys.exit(main())
