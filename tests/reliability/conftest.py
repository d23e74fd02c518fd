"""Fixtures of the reliability suite: the heavy switch, workspaces built once per session, tiny configs.

``--heavy`` (registered in tests/conftest.py, where pytest reads options) or ``SERT_TUI_HEAVY=1`` selects the
heavy variants. The figures the suite collects (kills survived, faults tried, generated inputs, rows lost)
are printed at the end of the session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rt_files
from tests.reliability import stats
from tests.reliability.harness import copy_workspace, launch, log_tail

#: The tiny experiment every stage test starts from: 3 StrategyQA training questions, 4 paths of 8 tokens
#: each (one question per decode batch, so kills land between questions; batch-invariant, so a resumed run that
#: samples only the questions left gets exactly the texts of an uninterrupted one), filters loose enough that every
#: question keeps a path, 4 training steps with a checkpoint after each, greedy evaluation of 2 questions.
BASE_CONFIG: dict[str, Any] = {
    "name": "reliability",
    "student": {"device": "cpu"},
    "data": {"dataset": "sqa", "train_limit": 3, "test_limit": 2},
    "sampling": {
        "first_tokens": 2,
        "per_branch": 2,
        "max_new_tokens": 8,
        "batch_size": 4,
        "seed": 7,
        "batch_invariant": True,
    },
    "filters": {"min_tokens": 0, "min_perplexity": 0.0, "max_rep2": 1.0},
    "train": {"max_steps": 4, "save_steps": 1, "batch_size": 2, "epochs": 4.0, "bf16": "off", "save_total_limit": 2},
    "eval": {"max_new_tokens": 8, "batch_size": 2, "baselines": False},
}


def heavy_enabled(config: pytest.Config) -> bool:
    try:
        flag = bool(config.getoption("--heavy"))
    except ValueError:  # the option is registered by tests/conftest.py; absent when run from elsewhere
        flag = False
    return flag or os.environ.get("SERT_TUI_HEAVY", "") not in ("", "0")


@pytest.fixture(scope="session")
def heavy(pytestconfig) -> bool:
    return heavy_enabled(pytestconfig)


@pytest.fixture(scope="session")
def kills_per_stage(heavy) -> int:
    return 10 if heavy else 3


def merge(base: dict, override: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def write_config(path: Path, **override: Any) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(merge(BASE_CONFIG, override)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sqa_template(tmp_path_factory) -> Path:
    """A workspace with StrategyQA imported (the Fine-tune-CoT split), built once; tests copy it."""
    from db.queries import save_dataset
    from db.session import open_workspace, session_scope
    from engine.data import reasoning_teacher

    path = tmp_path_factory.mktemp("template") / "sqa.db"
    engine = open_workspace(path)
    with session_scope(engine) as s:
        save_dataset(s, reasoning_teacher.load("sqa", *rt_files("strategy_qa")))
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def sampled(tmp_path_factory, sqa_template) -> dict[str, Any]:
    """An uninterrupted ``--stage sample`` run of ``BASE_CONFIG`` on a copy of the template: the reference
    the sample kill test compares with, and the start of the filter, training and concurrency tests."""
    from tests.reliability.harness import job_of_pid

    root = tmp_path_factory.mktemp("sampled")
    db = copy_workspace(sqa_template, root / "sampled.db")
    config = write_config(root / "config.toml")
    log = root / "sample.log"
    t0 = time.monotonic()
    proc = launch(db, ["run", str(config), "--stage", "sample"], log)
    anchor = None
    while proc.poll() is None:
        if anchor is None and (job_of_pid(db, proc.pid) or (None, None, ""))[2] == "running":
            anchor = time.monotonic()
        time.sleep(0.05)
    end = time.monotonic()
    assert proc.returncode == 0, log_tail(log)
    return {"db": db, "config": config, "work_s": end - (anchor or t0), "total_s": end - t0, "dir": root}


def pytest_sessionfinish(session) -> None:
    """A pytest-xdist worker sends its figures to the controller, which prints them (tests/conftest.py)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["reliability_stats"] = stats.snapshot()


@pytest.fixture(scope="session")
def teacher_server(tmp_path_factory):
    """(base_url, model name) of one ``transformers serve`` process on the bundled student for the session
    (tests/teacher_server.py starts it on a free 127.0.0.1 port and stops it at the end)."""
    from engine.models import prepare_model
    from tests.teacher_server import transformers_serve

    model_dir = prepare_model("default")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_serve(model_dir, log) as base_url:
        yield base_url, str(model_dir)
