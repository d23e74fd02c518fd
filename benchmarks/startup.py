"""Benchmark of the app's start in a real terminal (tmux): the time from launching ``sert-tui --db W`` to its first
frame (the home screen drawn), and to the workspace's data on it (a dataset's row), against the plain baseline in
the same run: a minimal Textual app (one Label) started the same way, the floor that importing and starting
Textual sets on this machine.

Each start is a fresh process in a fresh tmux session (200x50), polled with ``tmux capture-pane`` every 10 ms;
the runs alternate (baseline, app, baseline, app, ...) so that both see the same machine. The workspace holds
StrategyQA (../shared/data), imported once before the runs. Needs tmux.

    python benchmarks/startup.py [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"
SERT = Path(sys.executable).parent / "sert-tui"
BASELINE = """\
from textual.app import App
from textual.widgets import Label


class Hello(App):
    def compose(self):
        yield Label("baseline ready")


Hello().run()
"""


def screen(session: str) -> str:
    out = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True)
    return out.stdout


def timed_start(argv: list[str], marks: dict[str, str], timeout: float = 60.0) -> dict[str, float]:
    """Seconds from starting ``argv`` in a new tmux session until each mark's text is on its screen."""
    session = f"sert-startup-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "TERM": "xterm-256color"}
    started = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", *argv], check=True, env=env)
    seen: dict[str, float] = {}
    try:
        while len(seen) < len(marks) and time.perf_counter() - started < timeout:
            text = screen(session)
            for name, mark in marks.items():
                if name not in seen and mark in text:
                    seen[name] = time.perf_counter() - started
            time.sleep(0.01)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    missing = set(marks) - set(seen)
    if missing:
        raise SystemExit(f"error: {' '.join(argv)}: no {', '.join(sorted(missing))} within {timeout:.0f} s")
    return seen


def run_all(args: argparse.Namespace) -> dict[str, list[float]]:
    """The alternating starts: the baseline, then the app, ``args.runs`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.db"
        baseline = Path(tmp) / "baseline.py"
        baseline.write_text(BASELINE, encoding="utf-8")
        imported = subprocess.run(
            [str(SERT), "--db", str(db), "data", "import", "reasoning-teacher", "--name", "sqa", "--dataset",
             str(DATA / "dataset" / "strategy_qa.json"), "--split", str(DATA / "split" / "strategy_qa__default.json"),
             "--json"],
            capture_output=True, text=True,
        )  # fmt: skip
        if imported.returncode != 0:
            raise SystemExit(f"error: importing the workspace's dataset: {imported.stderr.strip()}")
        app_argv = [str(SERT), "--db", str(db)]
        runs: dict[str, list[float]] = {"baseline": [], "first_frame": [], "data_shown": []}
        for i in range(args.runs):
            runs["baseline"] += [timed_start([sys.executable, str(baseline)], {"ready": "baseline ready"})["ready"]]
            seen = timed_start(app_argv, {"frame": "Jobs", "data": "strategy_qa"})
            runs["first_frame"].append(seen["frame"])
            runs["data_shown"].append(seen["data"])
            print(
                f"run {i + 1}/{args.runs}: baseline {runs['baseline'][-1]:.3f} s, first frame {seen['frame']:.3f} s, "
                f"data {seen['data']:.3f} s",
                file=sys.stderr,
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="starts of each (default 7), alternating")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("error: tmux is not installed")

    keeper = f"sert-startup-keeper-{os.getpid()}"  # keeps the tmux server up between the sessions
    subprocess.run(["tmux", "new-session", "-d", "-s", keeper, "sleep", "3600"], check=True)
    try:
        runs = run_all(args)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", keeper], capture_output=True)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    summary = {
        "runs": args.runs,
        "median_seconds": medians,
        "first_frame_over_baseline_s": medians["first_frame"] - medians["baseline"],
        "load_average": os.getloadavg()[0],
        "samples": runs,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"start in tmux, median of {args.runs} (load average {summary['load_average']:.2f}): "
        f"minimal Textual app {medians['baseline']:.3f} s; sert-tui first frame {medians['first_frame']:.3f} s "
        f"(+{summary['first_frame_over_baseline_s']:.3f} s over the baseline), workspace data shown "
        f"{medians['data_shown']:.3f} s"
    )


if __name__ == "__main__":
    main()
