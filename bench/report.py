"""Time and size of a 100-feature HTML report on a synthetic, demo-shaped store.

    python bench/report.py [--quick] [--features 100] [--store-features 16384]

Builds a DuckDB file in a temporary folder with synthetic analysis results shaped like the demo's (20 top
examples and 10 quantile bands x 20 samples per feature, 17-token windows, 20 histogram bins, 10+10 logits,
10+10 neighbours, head scores, two steering runs), reopens it read-only as the CLI does, then times
`collect_report` + `write_report(..., "html")` for the densest N features. Prints one JSON line:
{"bench": "report", "features": 100, "seconds": ..., "mb": ..., "ok": ...}
(targets: under 20 s and under 15 MB). --quick uses a 2,048-feature store instead of 16,384.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.reports import Selection, collect_report, write_report  # noqa: E402
from store import connect, session  # noqa: E402
from tests.factories import build_report_store  # noqa: E402  (the report tests' store)

MAX_SECONDS, MAX_MB = 20.0, 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller store (under a minute in all)")
    parser.add_argument("--features", type=int, default=100, help="features in the report")
    parser.add_argument("--store-features", type=int, default=None, help="features per dictionary in the store")
    args = parser.parse_args()
    n_store = args.store_features or (2048 if args.quick else 16384)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        db = Path(tmp) / "store.duckdb"
        start = time.perf_counter()
        with session(db) as con:
            build_report_store(con, n_features=n_store, per_band=20)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        con = connect(db, read_only=True)
        steering = ["1", "2"] if con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'steering_runs'").fetchone()[0] else []
        report = collect_report(con, "topk-demo", Selection(top=args.features, by="density"), steering=steering,
                                heads=True)
        con.close()
        collect_s = time.perf_counter() - start
        out = write_report(report, "html", Path(tmp) / "report.html")[0]
        seconds = time.perf_counter() - start
        mb = out.stat().st_size / 1e6
    print(f"store of {n_store} features built in {build_s:.1f} s; collect {collect_s:.1f} s, "
          f"render + write {seconds - collect_s:.1f} s", file=sys.stderr)
    print(json.dumps({"bench": "report", "features": len(report.features), "store_features": n_store,
                      "seconds": round(seconds, 2), "mb": round(mb, 2),
                      "ok": seconds < MAX_SECONDS and mb < MAX_MB}))


if __name__ == "__main__":
    main()
