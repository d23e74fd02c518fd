"""``[log] report_to``: a real (tiny) training and evaluation write TensorBoard event files whose scalars are the
workspace's own metric rows, under ``<workspace dir>/tb/<job id>-<label>/``; logging changes no fingerprint; a
writer asked for and not installed is one ``error:`` line. And ``export metrics``: a job's rows as CSV/JSONL.

The student is a tiny random Llama with the bundled student's tokenizer (as in tests/test_cli_json.py).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from db.models import Evaluation, Job, Metric
from db.session import open_workspace, session_scope
from sert_tui.cli import main
from tests.conftest import rt_files

CONFIG = """\
name = "tiny"
[student]
model = "{student}"
device = "cpu"
[data]
dataset = "sqa"
train_limit = 6
test_limit = 2
[train]
batch_size = 2
max_steps = 3
save_steps = 10
max_length = 48
bf16 = "off"
[eval]
max_new_tokens = 8
baselines = false
"""


def cli(*argv: object, db: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([*(["--db", str(db)] if db else []), *(str(a) for a in argv)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A tiny random model with the bundled student's tokenizer, saved like any local student model."""
    from tests.conftest import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, student: Path) -> dict:
    """Finetune and evaluate the tiny student with ``report_to = ["tensorboard"]``."""
    folder = tmp_path_factory.mktemp("ws")
    db = folder / "w.db"
    dataset, split = rt_files("strategy_qa")
    rc, _, err = cli(
        "data", "import", "reasoning-teacher", "--name", "sqa", "--dataset", dataset, "--split", split, db=db
    )
    assert rc == 0, err
    plain = folder / "plain.toml"
    plain.write_text(CONFIG.format(student=student), encoding="utf-8")
    logged = folder / "logged.toml"
    logged.write_text(plain.read_text() + '[log]\nreport_to = ["tensorboard"]\n', encoding="utf-8")
    for stage in ("finetune", "eval"):
        rc, _, err = cli("run", logged, "--stage", stage, "--json", db=db)
        assert rc == 0, err
    engine = open_workspace(db)
    with session_scope(engine) as s:
        train = s.exec(select(Job).where(Job.kind == "finetune")).one()
        ev = s.exec(select(Job).where(Job.kind == "eval")).one()
    yield {"db": db, "folder": folder, "plain": plain, "logged": logged, "train": train, "eval": ev, "engine": engine}
    engine.dispose()


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder, read back by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_event_files_hold_the_workspace_metric_rows(trained) -> None:
    train = trained["train"]
    run = trained["folder"] / "tb" / f"{train.id}-Finetune"
    assert run.is_dir() and any(run.iterdir()), sorted((trained["folder"] / "tb").iterdir())
    logged = scalars(run)
    with session_scope(trained["engine"]) as s:
        rows = s.exec(select(Metric).where(Metric.job_id == train.id)).all()
    stored: dict[str, list[tuple[int, float]]] = {}
    for row in sorted(rows, key=lambda r: (r.name, r.step)):
        stored.setdefault(row.name, []).append((row.step, row.value))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(stored)
    assert set(logged) == set(stored)
    for name, points in stored.items():
        assert [step for step, _ in logged[name]] == [step for step, _ in points] == [1, 2, 3], name
        got = np.array([v for _, v in logged[name]], dtype=np.float32)
        want = np.array([v for _, v in points], dtype=np.float64).astype(np.float32)  # event files hold float32
        assert np.array_equal(got, want), (name, got, want)
    for entry in run.iterdir():  # owner-only, as every file of the workspace
        assert entry.stat().st_mode & 0o077 == 0


def test_evaluation_event_file_holds_acc_and_fmt(trained) -> None:
    ev = trained["eval"]
    run = trained["folder"] / "tb" / f"{ev.id}-Finetune"
    logged = scalars(run)
    with session_scope(trained["engine"]) as s:
        row = s.exec(select(Evaluation).where(Evaluation.job_id == ev.id)).one()
    final_step = 3  # the evaluated checkpoint's step
    for key, value in {"acc": row.acc, "fmt": row.fmt, "len": row.len, "rep": row.rep}.items():
        assert logged[f"eval/{key}"] == [(final_step, pytest.approx(np.float32(value)))], key


def test_logging_changes_no_fingerprint(trained) -> None:
    """The same config without ``[log]`` finds the jobs done: logging is not part of what is learned."""
    for stage, job in (("finetune", trained["train"]), ("eval", trained["eval"])):
        rc, out, err = cli("run", trained["plain"], "--stage", stage, "--json", db=trained["db"])
        assert rc == 0 and "already completed" in err, err
        assert [j["id"] for j in json.loads(out)["jobs"]] == [job.id]


@pytest.mark.skipif(importlib.util.find_spec("trackio") is not None, reason="trackio is installed here")
def test_trackio_asked_for_but_not_installed_is_one_error_line(trained) -> None:
    config = trained["folder"] / "trackio.toml"
    config.write_text(
        trained["plain"].read_text().replace("max_steps = 3", "max_steps = 2") + '[log]\nreport_to = ["trackio"]\n'
    )
    with session_scope(trained["engine"]) as s:
        before = len(s.exec(select(Job)).all())
    rc, out, err = cli("run", config, "--stage", "finetune", db=trained["db"])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "trackio" in errors[0] and "pip install" in errors[0], err
    with session_scope(trained["engine"]) as s:
        assert len(s.exec(select(Job)).all()) == before  # refused before any job was created


# -- export metrics ------------------------------------------------------------------------------------------
def test_export_metrics_csv_and_jsonl(trained, tmp_path: Path) -> None:
    train, db = trained["train"], trained["db"]
    with session_scope(trained["engine"]) as s:
        rows = s.exec(select(Metric).where(Metric.job_id == train.id)).all()
    want = sorted((r.step, r.name, r.value) for r in rows)

    rc, out, err = cli("export", "metrics", "--job", train.id, "--format", "csv", db=db)
    assert rc == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["step", "name", "value", "time"]
    assert [(int(r["step"]), r["name"], float(r["value"])) for r in table] == want

    target = tmp_path / "metrics.jsonl"
    rc, out, err = cli("export", "metrics", "--job", train.id, "--format", "jsonl", "--out", target, db=db)
    assert rc == 0 and out == "", err
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["step"], r["name"], r["value"]) for r in records] == want
    assert all(r["time"] for r in records)
    assert target.stat().st_mode & 0o077 == 0

    rc, _, err = cli("export", "metrics", "--job", train.id, "--out", target, db=db)  # exists: not overwritten
    assert rc == 2 and "already exists" in err


def test_export_metrics_of_an_unknown_job_is_one_error_line(trained) -> None:
    rc, out, err = cli("export", "metrics", "--job", 999, db=trained["db"])
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == ["error: no job 999 in this workspace (sert-tui jobs list)"]
