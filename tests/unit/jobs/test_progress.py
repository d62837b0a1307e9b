"""The progress channel: what a job's progress bars append, read back as progress and ETA; the CLI's line for an
interrupted command."""
import json
import subprocess
import sys
from pathlib import Path

from app.cli import _interrupt_of
from app.jobs.progress import ENV, read_last

ROOT = Path(__file__).resolve().parents[3]


def test_progress_bars_report_json_lines_when_the_variable_is_set(tmp_path):
    out = tmp_path / "progress.jsonl"
    code = ("import os; from app.jobs.progress import install; install(os.environ['%s']);"
            "from tqdm.auto import tqdm\nfor _ in tqdm(range(40), desc='count', unit='it'): pass" % ENV)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={ENV: str(out), "PATH": "/usr/bin:/bin"}, check=True,
                   capture_output=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and records[-1]["n"] == records[-1]["total"] == 40 and records[-1]["desc"] == "count"
    last = read_last(out)
    assert (last.n, last.total, last.fraction, last.eta_s) == (40, 40, 1.0, 0.0)


def test_the_last_complete_record_wins(tmp_path):
    out = tmp_path / "p.jsonl"
    assert read_last(out) is None
    out.write_text(json.dumps({"desc": "train topk", "n": 25, "total": 100, "unit": "tok", "elapsed": 5.0,
                               "rate": 5.0}) + "\n" + '{"desc": "train topk", "n": 3')  # a line being written
    last = read_last(out)
    assert (last.n, last.fraction, last.eta_s, last.unit) == (25, 0.25, 15.0, "tok")


def test_an_interrupt_behind_typers_exit_is_found():
    stop = KeyboardInterrupt("training stopped at step 3")
    try:
        try:
            raise stop
        except KeyboardInterrupt as exc:
            raise RuntimeError("typer's Exit(130)") from exc
    except RuntimeError as wrapped:
        assert _interrupt_of(SystemExit(130)) is None
        exit_ = SystemExit(130)
        exit_.__context__ = wrapped
        assert _interrupt_of(exit_) is stop
