"""Training jobs as real `sert-tui run` subprocesses: killed with SIGKILL after a checkpoint and resumed, cancelled
through the database (LoRA) and resumed, interrupted with Ctrl-C (the resumes and evaluations run the same command
in the test's process). They check lineage, checkpoints and resume, not
what the model learns, so they train a tiny student with the bundled student's tokenizer (tests/conftest.py), and
enough steps of it that the job is still running when the test stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from db.models import Checkpoint, Job, JobEvent, Metric
from db.paths_repo import write_question_paths
from db.queries import split_questions
from db.session import session_scope
from engine.jobs import create_job, request_cancel
from tests.conftest import run_cli
from tests.test_app_helpers import copy_verdicts

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
METRIC_NAMES = {"loss", "lr", "grad_norm", "tokens_per_s", "epoch"}
#: Steps of each job: a tiny model's step takes milliseconds, so a job needs a hundred of them to be still
#: running when the test kills, cancels or interrupts it two steps in.
STEPS = 100
PATH_TEXT = (
    " Water is made of hydrogen and oxygen, and the molecules stick to surfaces they touch, "
    "which is what people mean when they say that something is wet."
)


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    from tests.conftest import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"))


@pytest.fixture
def write_config(tiny_student: Path):
    def write(path: Path, **train) -> Path:
        return config_text(path, tiny_student, **train)

    return write


def config_text(path: Path, student: Path, **train) -> Path:
    lines = ['name = "resume"', "[student]", f'model = "{student}"', "[data]", 'dataset = "sqa"', "train_limit = 4"]
    lines += ["[train]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in train.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_filtered_paths(engine, dataset, config_path: Path) -> int:
    """A completed sample job of the config with one selected path per question, and its filter job, built
    through the repository functions (no sampling: this test is about training)."""
    from engine.config import load_config
    from engine.filtering.stage import filter_fingerprint
    from engine.sampling.stage import sample_fingerprint

    config = load_config(config_path)
    sample = create_job(engine, "sample", {}, fp=sample_fingerprint(config, dataset), dataset_id=dataset.id)
    with session_scope(engine) as s:
        for q in split_questions(s, dataset.id, "train", 4):
            write_question_paths(
                s, sample.id, q.id, [{"branch": 0, "sample": 0, "text": PATH_TEXT, "passed": True, "selected": True}]
            )
    filt = create_job(
        engine,
        "filter",
        {},
        fp=filter_fingerprint(config, sample.id),
        dataset_id=dataset.id,
        parent_id=sample.id,
    )
    with session_scope(engine) as s:
        for job_id in (sample.id, filt.id):
            s.get(Job, job_id).status = "completed"
        s.get(Job, sample.id).summary = {"filter_job": filt.id}
    copy_verdicts(engine, sample.id, filt.id)
    return filt.id


def _default_sigint() -> None:
    """A suite started in the background by a non-interactive shell (``cmd &``, nohup) inherits SIGINT as
    ignored, and Python then installs no KeyboardInterrupt handler: give the job process the terminal's default,
    so that the Ctrl-C test sends what a person's Ctrl-C would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(db_path: Path, config: Path, stage: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sert_tui", "--db", str(db_path), "run", str(config), "--stage", stage],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out")


def job_of(engine, kind: str) -> Job | None:
    with session_scope(engine) as s:
        return s.exec(select(Job).where(Job.kind == kind)).first()


def has_intermediate_checkpoint(engine, kind: str) -> bool:
    job = job_of(engine, kind)
    return job is not None and any(not c.is_final for c in checkpoints_of(engine, job.id))


def has_metric_step(engine, kind: str, step: int) -> bool:
    job = job_of(engine, kind)
    return job is not None and any(s >= step for s, _ in metric_rows(engine, job.id))


def checkpoints_of(engine, job_id: int) -> list[Checkpoint]:
    with session_scope(engine) as s:
        return list(s.exec(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)).all())


def metric_rows(engine, job_id: int) -> list[tuple[int, str]]:
    with session_scope(engine) as s:
        return [(m.step, m.name) for m in s.exec(select(Metric).where(Metric.job_id == job_id)).all()]


def test_killed_self_train_resumes_from_its_checkpoint(engine, sqa, db_path, tmp_path, write_config):
    config = write_config(
        tmp_path / "c.toml",
        epochs=1000.0,
        max_steps=STEPS,
        batch_size=1,
        save_steps=10,
        save_total_limit=2,
        max_length=48,
        lr=1e-4,
    )
    filter_id = seed_filtered_paths(engine, sqa, config)

    proc = start(db_path, config, "self-train")
    wait_for(lambda: has_intermediate_checkpoint(engine, "self-train"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    job = job_of(engine, "self-train")
    assert job.status == "running"  # killed: nobody recorded an end
    assert job.parent_id == filter_id and job.label == "SERT"
    killed_at = max(c.step for c in checkpoints_of(engine, job.id))
    assert 10 <= killed_at < STEPS and not any(c.is_final for c in checkpoints_of(engine, job.id))

    _, out = run_cli(db_path, "run", config, "--stage", "self-train")
    assert f"job {job.id} self-train: resuming" in out
    done = job_of(engine, "self-train")
    assert done.id == job.id and done.status == "completed"
    assert done.summary["steps"] == STEPS
    with session_scope(engine) as s:
        events = [e.message for e in s.exec(select(JobEvent).where(JobEvent.job_id == job.id)).all()]
    assert any(m.startswith(f"resuming from checkpoint step {killed_at}") for m in events)

    rows = metric_rows(engine, job.id)
    assert len(rows) == len(set(rows)) == STEPS * len(METRIC_NAMES)
    assert {step for step, _ in rows} == set(range(1, STEPS + 1))
    ckpts = checkpoints_of(engine, job.id)
    final = [c for c in ckpts if c.is_final]
    assert [c.step for c in final] == [STEPS]
    assert len([c for c in ckpts if not c.is_final]) <= 2
    final_dir = Path(final[0].path)
    assert final_dir == db_path.parent / "checkpoints" / f"job-{job.id}" / f"step-{STEPS}"
    assert {"model.safetensors", "config.json", "tokenizer.json", "sert_config.json"} <= {
        p.name for p in final_dir.iterdir()
    }
    assert (final_dir.stat().st_mode & 0o777) == 0o700
    assert not list(final_dir.parent.glob(".step-*.tmp"))

    _, out = run_cli(db_path, "run", config, "--stage", "self-train")
    assert "already completed" in out


def test_cancelled_lora_finetune_leaves_a_usable_checkpoint_and_resumes(engine, sqa, db_path, tmp_path, write_config):
    from engine.training.checkpoints import STATE_FILE, load_trained

    config = write_config(
        tmp_path / "c.toml",
        epochs=1000.0,
        max_steps=STEPS,
        batch_size=1,
        save_steps=10,
        save_total_limit=1,
        max_length=48,
        lora=True,
        lora_r=4,
    )
    proc = start(db_path, config, "finetune")
    wait_for(lambda: has_metric_step(engine, "finetune", 12), proc)  # past the first periodic checkpoint
    job = job_of(engine, "finetune")
    request_cancel(engine, job.id)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    job = job_of(engine, "finetune")
    assert job.status == "cancelled" and job.label == "Finetune" and job.parent_id is None
    ckpts = checkpoints_of(engine, job.id)
    assert len(ckpts) == 1 and not ckpts[0].is_final  # step 10's pruned: save_total_limit = 1
    last = Path(ckpts[0].path)
    steps_done = max(step for step, _ in metric_rows(engine, job.id))
    assert ckpts[0].step == steps_done < STEPS
    assert (last / "adapter_config.json").is_file() and (last / STATE_FILE).is_file()
    model, tokenizer = load_trained(last)  # usable: the adapter merged into its start model
    ids = tokenizer("Question: Is water wet? Answer:", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=2, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 2

    _, out = run_cli(db_path, "run", config, "--stage", "finetune")
    job = job_of(engine, "finetune")
    assert job.status == "completed" and job.summary["steps"] == STEPS
    rows = metric_rows(engine, job.id)
    assert len(rows) == len(set(rows)) == STEPS * len(METRIC_NAMES)
    final = [c for c in checkpoints_of(engine, job.id) if c.is_final]
    assert [c.step for c in final] == [STEPS]
    final_dir = Path(final[0].path)
    assert (final_dir / "model.safetensors").is_file() and not (final_dir / "adapter_config.json").exists()


def test_interrupted_finetune_saves_its_steps_and_eval_can_pick_that_checkpoint(
    engine, sqa, db_path, tmp_path, write_config
):
    """Ctrl-C (SIGINT) in the middle of training: the steps done since the last checkpoint are saved (no
    periodic checkpoint here) and the job ends cancelled. ``eval.job`` then evaluates exactly that job's last
    checkpoint, and ``eval.checkpoint`` the same directory; the resumed job still ends with its step count."""
    import json

    config = write_config(
        tmp_path / "c.toml", epochs=1000.0, max_steps=STEPS, batch_size=1, save_steps=1000, max_length=48
    )
    proc = start(db_path, config, "finetune")
    wait_for(lambda: has_metric_step(engine, "finetune", 2), proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "interrupted: saving the" in out
    job = job_of(engine, "finetune")
    assert job.status == "cancelled"
    [ckpt] = checkpoints_of(engine, job.id)
    steps_done = max(step for step, _ in metric_rows(engine, job.id))
    assert ckpt.step == steps_done < STEPS and not ckpt.is_final

    def evaluate(key: str, value) -> dict:
        text = config.read_text().replace("train_limit = 4", "train_limit = 4\ntest_limit = 2")
        text += f"[eval]\nmax_new_tokens = 4\n{key} = {json.dumps(value)}\n"
        path = tmp_path / f"eval-{key}.toml"
        path.write_text(text)
        out, _ = run_cli(db_path, "run", path, "--stage", "eval", "--json")
        [row] = json.loads(out)["jobs"]
        with session_scope(engine) as s:
            return s.get(Job, row["id"]).summary

    by_job = evaluate("job", job.id)
    assert by_job["label"] == "Finetune" and by_job["model"] == ckpt.path and by_job["n"] == 2
    by_path = evaluate("checkpoint", ckpt.path)
    assert by_path["evaluation"] == by_job["evaluation"]  # the same model and settings: the same evaluation

    _, out = run_cli(db_path, "run", config, "--stage", "finetune")
    job = job_of(engine, "finetune")
    assert job.status == "completed" and job.summary["steps"] == STEPS
    assert f"resuming from checkpoint step {ckpt.step}" in out
