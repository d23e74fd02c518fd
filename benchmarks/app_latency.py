"""Key press → screen latency of the app, idle and while a real sampling job runs on the same machine.

The app runs headless (Textual's test driver) on a workspace holding a sample job with ``--paths`` paths. A
probe wraps the app's frame output: a measurement starts when the key event is handed to the driver and ends
at the first frame whose rendered text shows the key's effect — the decision label on the decided row for
`a` / `x`, the next path in the detail pane for `down`, the next page's id range for `]`. The same keys are
measured twice in one run: first with the machine idle (baseline), then while
``sert-tui --db W run CONFIG --stage sample`` (the real engine, the bundled student) writes paths into the
same workspace. Prints p50/p95 per key kind and phase; ``--json`` prints the same as one JSON object.

    .venv/bin/python benchmarks/app_latency.py [--paths 20000] [--presses 40] [--layout question] [--review] [--json]

``--review`` measures the review screen instead: a key (a choice, none, skip) until the next question shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (200, 60)


SQA_FILES = (
    ROOT.parent / "shared" / "data" / "reasoning-teacher" / "dataset" / "strategy_qa.json",
    ROOT.parent / "shared" / "data" / "reasoning-teacher" / "split" / "strategy_qa__default.json",
)
PER_QUESTION = 25  # the paper's 5 branches x 5 samples


def build_workspace(path: Path, n_paths: int, layout: str = "question") -> tuple[int, str]:
    """A workspace with a sample job of ``n_paths`` filtered paths.

    ``layout="question"``: as the sample stage writes them, 25 paths per question, one question after another,
    on StrategyQA's training split where ../shared/data has it (1,603 questions: 40,000 paths cover it), else on
    the default generated dataset; answers vary, some are correct, the lowest rep-2 survivor is selected.
    ``layout="interleaved"``: the default generated dataset's questions in turn (path n on question n mod N),
    every path passing and none selected: the layout this benchmark used before (pages span every question).
    """
    import random
    import sqlite3

    from sqlmodel import select

    from db.models import Dataset, Question
    from db.session import open_workspace, session_scope
    from engine.jobs import create_job
    from engine.pipeline.processes import DEFAULT_DATASET, ensure_dataset

    engine = open_workspace(path)
    name = DEFAULT_DATASET
    if layout == "question" and all(f.exists() for f in SQA_FILES):
        from db.queries import save_dataset
        from engine.data import reasoning_teacher

        name = "strategy_qa"
        with session_scope(engine) as s:
            save_dataset(s, reasoning_teacher.load(name, *SQA_FILES))
    else:
        ensure_dataset(engine)
    with session_scope(engine) as s:
        dataset = s.exec(select(Dataset).where(Dataset.name == name)).one()
        questions = [
            (q.id, q.answer)
            for q in s.exec(select(Question).where(Question.dataset_id == dataset.id, Question.split == "train")).all()
        ]
    job = create_job(engine, "sample", {"name": "bench"}, dataset_id=dataset.id, label="bench").id
    rules = ("pattern", "length", "repetition", "perplexity")
    rng = random.Random(0)
    rows = []
    if layout == "interleaved":
        verdict = json.dumps({r: {"pass": True, "reason": ""} for r in rules})
        for n in range(n_paths):
            qid = questions[n % len(questions)][0]
            rows.append(
                (job, qid, "self", n // len(questions), 0, " The", f"path {n}: some reasoning text. " * 4, 40, 8.0,
                 0.05, None, None, verdict, True, False, "2026-01-01 00:00:00")
            )  # fmt: skip
    else:
        for n in range(n_paths):
            qid, gold = questions[(n // PER_QUESTION) % len(questions)]
            k = n % PER_QUESTION
            rep2 = round(rng.uniform(0, 0.3), 3)
            passed = rep2 <= 0.2 and k % 7 != 0
            answer = rng.choice(("yes", "no")) if gold in ("yes", "no") else gold
            verdict = json.dumps(
                {r: {"pass": passed or r != "repetition", "reason": "" if passed else "rep-2"} for r in rules}
            )
            text = f"path {n}: the question asks about one thing, and the facts point one way. " * 2
            rows.append(
                (job, qid, "self", k // 5, k % 5, " The", f"{text}So the answer is {answer}.", 40, 8.0 + k, rep2,
                 answer, answer == gold, verdict, passed, False, "2026-01-01 00:00:00")
            )  # fmt: skip
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO paths (job_id, question_id, source, branch, sample, branch_token, text, tokens, perplexity, "
        "rep2, answer, correct, verdicts, passed, selected, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    if layout != "interleaved":  # the selection: the lowest rep-2 survivor of each question
        con.execute(
            "UPDATE paths SET selected = 1 WHERE id IN (SELECT (SELECT p.id FROM paths p WHERE p.job_id = q.job_id "
            "AND p.question_id = q.question_id AND p.passed ORDER BY p.rep2, p.id LIMIT 1) FROM "
            "(SELECT DISTINCT job_id, question_id FROM paths WHERE job_id = ?) q)",
            (job,),
        )
    con.commit()
    con.close()
    engine.dispose()
    return job, name  # type: ignore[return-value]


class FrameProbe:
    """Times key events to the first frame whose text satisfies a check."""

    def __init__(self, app) -> None:
        self.app = app
        self._orig = app._display
        app._display = self._display
        self._pending: tuple[float, object, asyncio.Future] | None = None

    def _display(self, screen, renderable) -> None:
        self._orig(screen, renderable)
        if self._pending is None or renderable is None:
            return
        now = time.perf_counter()
        t0, check, future = self._pending
        try:
            text = renderable.render_segments(self.app.console)  # the bytes a terminal would receive
        except Exception:
            return
        if check(text):
            self._pending = None
            if not future.done():
                future.set_result(now - t0)

    async def press(self, key: str, check, timeout: float = 10.0) -> float:
        from textual import events

        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        char = key if len(key) == 1 else None
        self._pending = (time.perf_counter(), check, future)
        self.app._driver.send_message(events.Key(key, char))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending = None


async def measure(workspace: Path, job_id: int, presses: int, gap: float) -> dict[str, list[float]]:
    from sert_tui.app import SertApp
    from sert_tui.screens.paths import PathsScreen

    app = SertApp(workspace)
    out: dict[str, list[float]] = {"decide": [], "move": [], "page": []}
    async with app.run_test(size=SIZE) as pilot:
        while not getattr(app.screen, "loaded", False):
            await pilot.pause(0.05)
        screen = PathsScreen(job_id)
        await app.push_screen(screen)
        while screen.loads < 1:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        probe = FrameProbe(app)
        for i in range(presses):
            # decide: the row under the cursor gets its label
            row = screen.current_row()
            key, label = ("a", "✓ accept") if i % 2 == 0 else ("x", "✗ reject")
            out["decide"].append(await probe.press(key, lambda text, label=label: label in text))
            await asyncio.sleep(gap)
            # move: the detail pane shows the next path
            nxt = screen.rows[min(screen.table.cursor_row + 1, len(screen.rows) - 1)]
            out["move"].append(await probe.press("down", lambda text, pid=nxt.id: f"path {pid} ·" in text))
            await asyncio.sleep(gap)
            if i % 5 == 4 and screen.has_next:
                first = screen.rows[-1].id + 1
                out["page"].append(await probe.press("right_square_bracket", lambda text, f=first: f"ids {f}–" in text))
                await asyncio.sleep(gap)
            assert row is not None
        app.decision_writer.flush()
    return out


async def measure_review(workspace: Path, job_id: int, presses: int, gap: float) -> dict[str, list[float]]:
    """The review screen: each key (a choice ``1``-``3``, ``n`` none, ``s`` skip) until the next question's
    number shows in its status line."""
    from sert_tui.app import SertApp
    from sert_tui.screens.review import ReviewScreen

    app = SertApp(workspace)
    out: dict[str, list[float]] = {"choose": [], "none": [], "skip": []}
    keys = [("1", "choose"), ("2", "choose"), ("n", "none"), ("3", "choose"), ("s", "skip")]
    async with app.run_test(size=SIZE) as pilot:
        while not getattr(app.screen, "loaded", False):
            await pilot.pause(0.05)
        screen = ReviewScreen(job_id)
        await app.push_screen(screen)
        while not screen.loaded.is_set():
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        probe = FrameProbe(app)
        for i in range(presses):
            key, kind = keys[i % len(keys)]
            target = f"question {screen.position + 2}/{len(screen.items)}"
            out[kind].append(await probe.press(key, lambda text, t=target: t in text))
            await asyncio.sleep(gap)
        app.decision_writer.flush()
    return out


def start_sampler(workspace: Path, dataset: str, questions: int, tokens: int) -> tuple[subprocess.Popen, Path]:
    config = workspace.with_name("bench-sample.toml")
    config.write_text(
        f'name = "bench-sampler"\n[data]\ndataset = "{dataset}"\ntrain_limit = {questions}\n'
        f"[sampling]\nmax_new_tokens = {tokens}\n"
    )
    log = workspace.with_name("sampler.log")
    cmd = [sys.executable, "-m", "sert_tui", "--db", str(workspace), "run", str(config), "--stage", "sample"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    return proc, log


def wait_decoding(workspace: Path, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Block until the sampler has loaded the student and is decoding (its log names the backend)."""
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the sampling job exited early ({proc.returncode}):\n{log.read_text()[-2000:]}")
        if "sampling backend" in log.read_text(errors="replace"):
            time.sleep(2.0)  # well into decoding
            return
        time.sleep(0.5)
    raise SystemExit("the sampling job did not start decoding in time")


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {"n": 0}
    p95 = ms[min(len(ms) - 1, max(0, round(0.95 * len(ms)) - 1))]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ms[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=20_000, help="paths in the job the app browses")
    parser.add_argument("--presses", type=int, default=40, help="decisions per phase (each followed by a move)")
    parser.add_argument("--gap", type=float, default=0.12, help="seconds between key presses (a fast person)")
    parser.add_argument("--questions", type=int, default=20, help="questions the background sampler works on")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens of the background sampler")
    parser.add_argument(
        "--layout",
        choices=("question", "interleaved"),
        default="question",
        help="question: 25 paths per question as the sample stage writes them (StrategyQA where ../shared/data "
        "has it); interleaved: this benchmark's older workspace (path n on question n mod 52)",
    )
    parser.add_argument(
        "--review", action="store_true", help="measure the review screen (key -> next question) instead"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run = measure_review if args.review else measure

    with tempfile.TemporaryDirectory(prefix="sert-latency-") as tmp:
        workspace = Path(tmp) / "workspace.db"
        job_id, dataset = build_workspace(workspace, args.paths, args.layout)
        idle = asyncio.run(run(workspace, job_id, args.presses, args.gap))
        proc, log = start_sampler(workspace, dataset, args.questions, args.tokens)
        try:
            wait_decoding(workspace, proc, log)
            busy = asyncio.run(run(workspace, job_id, args.presses, args.gap))
            still_running = proc.poll() is None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "screen": "review" if args.review else "paths",
        "layout": args.layout,
        "paths": args.paths,
        "cpus": os.cpu_count(),
        "idle": {kind: summary(v) for kind, v in idle.items()},
        "sampling": {kind: summary(v) for kind, v in busy.items()},
        "sampler_ran_throughout": still_running,
    }
    all_busy = [v for values in busy.values() for v in values]
    all_idle = [v for values in idle.values() for v in values]
    result["idle_all"] = summary(all_idle)
    result["sampling_all"] = summary(all_busy)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"key press -> frame latency, {result['screen']} screen, {args.paths:,} paths in the job ({args.layout}), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    for phase in ("idle", "sampling"):
        print(f"  {phase}{' (real sample job running)' if phase == 'sampling' else ''}:")
        for kind in idle:
            s = result[phase][kind]
            if s["n"]:
                p50, p95, top = s["p50_ms"], s["p95_ms"], s["max_ms"]
                print(f"    {kind:<7} n={s['n']:<3} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {top:7.1f} ms")
        s = result[f"{phase}_all"]
        print(f"    {'all':<7} n={s['n']:<3} p50 {s['p50_ms']:7.1f} ms   p95 {s['p95_ms']:7.1f} ms")
    print(f"  sampler still running at the end of the measurement: {still_running}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
