"""Shared fixtures: a fresh workspace file, the real shared data, the real bundled student."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in one worker process per core (pytest-xdist): each worker, and every job it
    # starts, gets its share of the cores, so that two workers' PyTorch threads do not wait on each other.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)


def rt_files(task: str) -> tuple[Path, Path]:
    """Dataset and split files of one Fine-tune-CoT task in ../shared/data."""
    return SHARED_DATA / "dataset" / f"{task}.json", SHARED_DATA / "split" / f"{task}__default.json"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "workspace.db"


@pytest.fixture
def engine(db_path: Path):
    from db.session import open_workspace

    eng = open_workspace(db_path)
    yield eng
    eng.dispose()


@pytest.fixture
def sqa(engine):
    """The StrategyQA dataset of ../shared/data imported as 'sqa'; returns the Dataset row."""
    from db.queries import save_dataset
    from db.session import session_scope
    from engine.data import reasoning_teacher

    spec = reasoning_teacher.load("sqa", *rt_files("strategy_qa"))
    with session_scope(engine) as s:
        return save_dataset(s, spec)


@pytest.fixture(scope="session")
def student():
    """The real bundled student (model, tokenizer), loaded once per test run."""
    from engine.models import load_model

    return load_model("default", device="cpu")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ARG001
    """pytest-xdist's controller: add a finished worker's reliability figures."""
    from tests.reliability import stats

    data = getattr(node, "workeroutput", {}).get("reliability_stats")
    if data:
        stats.merge(data)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """The reliability suite's figures (tests/reliability/stats.py), summed over the workers."""
    from tests.reliability import stats
    from tests.reliability.conftest import heavy_enabled

    lines = stats.summary_lines()
    if not lines:
        return
    terminalreporter.section("reliability figures")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.environ.get("SERT_TUI_RELIABILITY_JSON")
    if out:
        Path(out).write_text(
            json.dumps(
                {
                    "kills": dict(stats.kills),
                    "faults": dict(stats.faults),
                    "generated": dict(stats.generated),
                    "lost": dict(stats.lost),
                    "heavy": heavy_enabled(config),
                },
                indent=2,
            )
        )


def pytest_addoption(parser):
    """``--heavy``: the heavy variants of tests/reliability (10 kills per stage, more generated inputs)."""
    parser.addoption(
        "--heavy",
        action="store_true",
        default=False,
        help="run the heavy variants of the reliability suite (also: SERT_TUI_HEAVY=1)",
    )


def tiny_llama(vocab_size: int, *, layers: int = 2, seed: int = 0, **config):
    """A randomly initialised Llama-family model small enough for unit tests: 32 wide, 4 query heads sharing
    2 key/value heads (grouped-query attention, as SmolLM2), ``layers`` layers; ``config``: more LlamaConfig
    fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        **config,
    )
    return LlamaForCausalLM(cfg)


def run_cli(db: Path, *argv: object, code: int = 0) -> tuple[str, str]:
    """``sert-tui --db DB ARGV`` in this process, its exit code asserted to be ``code``; returns (stdout,
    stderr). The runs a test neither kills nor interrupts need no process start of their own."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from sert_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["--db", str(db), *(str(a) for a in argv)])
    assert rc == code, err.getvalue()[-3000:]
    return out.getvalue(), err.getvalue()


def save_tiny_student(folder: Path) -> Path:
    """A tiny random model with the bundled student's tokenizer, saved in ``folder`` like any local student model
    (``student.model = "<folder>"``): what a test of jobs, lineage or resume needs, in seconds."""
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer("default")
    tokenizer.save_pretrained(folder)
    tiny_llama(len(tokenizer), layers=1).save_pretrained(folder)
    return folder


def make_evaluation(engine, dataset_id: int, label: str, correct: list[bool], status: str = "completed") -> int:
    """An evaluation of the first ``len(correct)`` test questions of a dataset with those outcomes, its eval job
    in ``status``; returns the evaluation's id."""
    from sqlmodel import select

    from db.models import Evaluation, Job, Prediction, Question
    from db.session import session_scope
    from engine.jobs import create_job

    job = create_job(engine, "eval", {}, dataset_id=dataset_id)
    with session_scope(engine) as s:
        s.get(Job, job.id).status = status  # type: ignore[union-attr]
        qids = s.exec(
            select(Question.id).where(Question.dataset_id == dataset_id, Question.split == "test").order_by(Question.id)
        ).all()[: len(correct)]
        ev = Evaluation(
            job_id=job.id, label=label, dataset_id=dataset_id, n=len(correct), acc=sum(correct) / len(correct)
        )
        s.add(ev)
        s.flush()
        for qid, ok in zip(qids, correct, strict=True):
            s.add(Prediction(evaluation_id=ev.id, question_id=qid, correct=ok))
        assert ev.id is not None
        return ev.id
