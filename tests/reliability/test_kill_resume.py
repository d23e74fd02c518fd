"""Kill -9 at seeded random moments, then resume: sample, filter, self-train, teacher and eval jobs run as real
``sert-tui --db W run CONFIG --stage X`` processes on the real bundled student.

After every kill: no unique key of any table appears twice. Between kills a "person" accepts and rejects
paths that already exist (sample, filter, teacher). At the end of every cycle: the job completed, the
decisions are all still there, and the result equals an uninterrupted run of the same config (sample: the
same (question, branch, sample) keys and texts; filter: the same verdicts; train: the same steps and losses;
teacher: each question answered once, the same rationales; eval: the same predictions and metrics).

3 kills per stage by default, 10 with ``--heavy``. Sizes are tiny (3 questions, 4 paths of 8 tokens, 4 LoRA
steps, 4 evaluated questions) so the default suite stays within a few minutes on two shared cores; the filter
judges those paths copied onto 1,500 more questions, so that its one transaction lasts long enough to be
killed inside (after each kill the paths are judged all or not at all).
"""

from __future__ import annotations

import math
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import stats
from tests.reliability.conftest import write_config
from tests.reliability.harness import (
    KillReport,
    Scenario,
    copy_workspace,
    duplicates,
    kill_and_resume,
    query,
    timed_reference,
)

pytestmark = [pytest.mark.model]
SEEDS = {"sample": 101, "filter": 202, "self-train": 303, "teacher": 404, "eval": 505}


# -- shared checks -----------------------------------------------------------------------------------------------
def jobs_of(db: Path, kind: str) -> list[tuple]:
    return query(db, "SELECT id, status, fingerprint FROM jobs WHERE kind = ? ORDER BY id", (kind,))


def the_completed_job(db: Path, kind: str) -> int:
    rows = jobs_of(db, kind)
    assert len(rows) == 1, f"{kind}: expected one job, found {rows}"
    assert rows[0][1] == "completed", rows
    return rows[0][0]


def decide(db: Path, rng: random.Random, job_kind: str, stage: str, k: int = 2) -> dict[int, str]:
    """A person's decisions on up to ``k`` undecided paths of the job (through the app's repository code)."""
    from db.paths_repo import set_decision
    from db.session import open_workspace, session_scope

    ids = [
        r[0]
        for r in query(
            db,
            "SELECT p.id FROM paths p JOIN jobs j ON j.id = p.job_id WHERE j.kind = ? AND p.decision IS NULL "
            "ORDER BY p.id",
            (job_kind,),
        )
    ]
    made = {pid: rng.choice(["accepted", "rejected"]) for pid in rng.sample(ids, min(k, len(ids)))}
    stats.decisions[stage] += len(made)
    if made:
        engine = open_workspace(db)
        with session_scope(engine) as s:
            for pid, decision in made.items():
                set_decision(s, pid, decision)
        engine.dispose()
    return made


def lost_decisions(db: Path, made: dict[int, str], check: str) -> int:
    if not made:
        return 0
    marks = ",".join("?" * len(made))
    now = dict(query(db, f"SELECT id, decision FROM paths WHERE id IN ({marks})", tuple(made)))
    lost = sum(now.get(pid) != decision for pid, decision in made.items())
    stats.lost[check] += lost
    return lost


def path_table(db: Path, job_id: int) -> dict[tuple, tuple]:
    """(question index, source, branch, sample) -> (text, tokens, perplexity, verdicts, passed, selected)."""
    rows = query(
        db,
        'SELECT q."index", p.source, p.branch, p.sample, p.text, p.tokens, p.perplexity, p.verdicts, p.passed, '
        "p.selected FROM paths p JOIN questions q ON q.id = p.question_id WHERE p.job_id = ?",
        (job_id,),
    )
    return {r[:4]: r[4:] for r in rows}


def record(report: KillReport, stage: str, kills: int) -> None:
    assert report.landed >= kills
    print(f"{stage}: {report.landed} kills landed in {report.attempts} runs, {report.cycles} cycle(s); {report.delays}")


# -- sample ------------------------------------------------------------------------------------------------------
def test_sample_survives_kill_9(sampled, sqa_template, tmp_path: Path, kills_per_stage: int) -> None:
    ref_job = the_completed_job(sampled["db"], "sample")
    reference = path_table(sampled["db"], ref_job)
    assert len(reference) == 3 * 4
    db = tmp_path / "w.db"
    made: dict[int, str] = {}

    def prepare() -> None:
        copy_workspace(sqa_template, db)
        made.clear()

    def between(rng: random.Random) -> None:
        made.update(decide(db, rng, "sample", "sample"))  # on the questions already written

    def verify() -> None:
        job = the_completed_job(db, "sample")
        assert not duplicates(db)
        got = path_table(db, job)
        stats.lost["sample paths"] += len(set(reference) - set(got))
        assert set(got) == set(reference), "the (question, branch, sample) keys differ from an uninterrupted run"
        assert {k: v[:2] for k, v in got.items()} == {k: v[:2] for k, v in reference.items()}, "texts differ"
        assert all(math.isclose(got[k][2], reference[k][2], rel_tol=1e-4) for k in got)
        items = query(db, "SELECT question_id, status FROM job_items WHERE job_id = ?", (job,))
        assert sorted(s for _q, s in items) == ["done"] * 3
        assert lost_decisions(db, made, "sample decisions") == 0

    s = Scenario(
        "sample",
        db,
        sampled["config"],
        tmp_path,
        sampled["work_s"],
        anchor="progress",
        prepare=prepare,
        between=between,
        verify=verify,
    )
    record(kill_and_resume(s, kills_per_stage, SEEDS["sample"]), "sample", kills_per_stage)


# -- filter ------------------------------------------------------------------------------------------------------
FILTER_QUESTIONS = 1500  # questions the filter judges: its one transaction then lasts about two seconds


@pytest.fixture(scope="module")
def big_sampled(sampled, tmp_path_factory) -> Path:
    """The sampled workspace with its sample job's real paths copied onto 1,500 more StrategyQA questions (25
    paths each, as a default run has), so that the filter job -- one transaction over every path -- lasts
    long enough for kills to land inside it rather than in Python's start-up."""
    from sqlmodel import select

    from db.models import Job
    from db.models import Path as PathRow
    from db.paths_repo import write_question_paths
    from db.queries import split_questions
    from db.session import open_workspace, session_scope

    db = copy_workspace(sampled["db"], tmp_path_factory.mktemp("big") / "big.db")
    engine = open_workspace(db)
    columns = ("branch_token", "text", "tokens", "mean_logprob", "perplexity", "rep2", "answer", "correct")
    with session_scope(engine) as s:
        job = s.exec(select(Job).where(Job.kind == "sample")).one()
        real = [{c: getattr(p, c) for c in columns} for p in s.exec(select(PathRow).where(PathRow.job_id == job.id))]
        sampled_ids = set(s.exec(select(PathRow.question_id).where(PathRow.job_id == job.id)).all())
        others = [q for q in split_questions(s, job.dataset_id, "train", None) if q.id not in sampled_ids]
        for n, q in enumerate(others[:FILTER_QUESTIONS]):
            rows = [{**real[(n + k) % len(real)], "branch": k // 5, "sample": k % 5} for k in range(25)]
            write_question_paths(s, job.id, q.id, rows)
    engine.dispose()
    return db


def test_filter_survives_kill_9(big_sampled, sampled, tmp_path: Path, kills_per_stage: int) -> None:
    ref = Scenario("filter", copy_workspace(big_sampled, tmp_path / "ref.db"), sampled["config"], tmp_path, 0.0)
    work_s = timed_reference(ref)
    reference = path_table(ref.db, the_completed_job(ref.db, "sample"))
    total = len(reference)
    assert total > 25 * FILTER_QUESTIONS
    db = tmp_path / "w.db"
    made: dict[int, str] = {}
    landed = {"before its commit": 0, "after its commit": 0}

    def prepare() -> None:
        copy_workspace(big_sampled, db)
        made.clear()

    def between(rng: random.Random) -> None:
        # all or nothing: a kill inside the filter's transaction leaves no path judged, one after it every path
        judged = query(db, "SELECT COUNT(*) FROM paths WHERE verdicts != '{}'")[0][0]
        assert judged in (0, total), f"a killed filter job left {judged} of {total} paths judged"
        landed["before its commit" if judged == 0 else "after its commit"] += 1
        made.update(decide(db, rng, "sample", "filter"))

    def verify() -> None:
        the_completed_job(db, "filter")
        assert not duplicates(db)
        got = path_table(db, the_completed_job(db, "sample"))
        assert got == reference, "verdicts differ from an uninterrupted filter run"
        assert lost_decisions(db, made, "filter decisions") == 0

    s = Scenario("filter", db, sampled["config"], tmp_path, work_s, prepare=prepare, between=between, verify=verify)
    record(kill_and_resume(s, kills_per_stage, SEEDS["filter"]), "filter", kills_per_stage)
    print(f"filter kills: {landed}")
    for where, n in landed.items():
        if n:
            stats.faults[f"filter: kill {where}"] += n


# -- self-train ----------------------------------------------------------------------------------------------------
TRAIN = {"lora": True, "max_steps": 4, "save_steps": 1, "batch_size": 2, "epochs": 4.0}


@pytest.fixture(scope="module")
def filtered(sampled, tmp_path_factory) -> Path:
    """The sampled workspace with the filter stage run (the start of self-training)."""
    from tests.reliability.harness import cli

    db = copy_workspace(sampled["db"], tmp_path_factory.mktemp("filtered") / "filtered.db")
    result = cli(db, "run", str(sampled["config"]), "--stage", "filter")
    assert result.returncode == 0, result.stderr
    return db


def training_run(db: Path) -> dict[str, Any]:
    job = the_completed_job(db, "self-train")
    metrics = query(db, "SELECT step, name, value FROM metrics WHERE job_id = ? ORDER BY step, name", (job,))
    ckpts = query(db, "SELECT step, is_final, path FROM checkpoints WHERE job_id = ? ORDER BY step", (job,))
    return {
        "job": job,
        "steps": sorted({m[0] for m in metrics}),
        "loss": {m[0]: m[2] for m in metrics if m[1] == "loss"},
        "checkpoints": ckpts,
        "summary": query(db, "SELECT summary FROM jobs WHERE id = ?", (job,))[0][0],
    }


def test_self_train_survives_kill_9(filtered: Path, tmp_path: Path, kills_per_stage: int) -> None:
    config = write_config(tmp_path / "train.toml", train=TRAIN)
    ref = Scenario("self-train", copy_workspace(filtered, tmp_path / "ref.db"), config, tmp_path, 0.0)
    work_s = timed_reference(ref)
    reference = training_run(ref.db)
    assert reference["steps"] == [1, 2, 3, 4]
    db = tmp_path / "w.db"

    def verify() -> None:
        assert not duplicates(db)
        got = training_run(db)
        stats.lost["training steps"] += len(set(reference["steps"]) - set(got["steps"]))
        assert got["steps"] == reference["steps"], "a resumed run must end with the same step count"
        final = [c for c in got["checkpoints"] if c[1]]
        assert len(final) == 1 and final[0][0] == 4
        assert len([c for c in got["checkpoints"] if not c[1]]) <= 2  # save_total_limit
        for step, value in reference["loss"].items():  # resumed from optimizer + RNG state: the same losses
            assert math.isclose(got["loss"][step], value, rel_tol=1e-3, abs_tol=1e-4), (step, got["loss"], value)
        root = db.parent / "checkpoints"
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert all(Path(c[2]).is_dir() for c in got["checkpoints"])

    s = Scenario(
        "self-train", db, config, tmp_path, work_s, prepare=lambda: copy_workspace(filtered, db), verify=verify
    )
    record(kill_and_resume(s, kills_per_stage, SEEDS["self-train"]), "self-train", kills_per_stage)


# -- teacher -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_teacher_survives_kill_9_and_faults(teacher_server, sqa_template, tmp_path: Path, kills_per_stage: int) -> None:
    from tests.teacher_server import FaultProxy

    base_url, model = teacher_server
    with FaultProxy(base_url, retry_after="0") as proxy:
        teacher = {
            "base_url": proxy.base_url,
            "model": model,
            "samples": 2,
            "max_tokens": 8,
            "concurrency": 2,
            "timeout": 120,
            "retry_base_delay": 0.05,
            "retry_max_delay": 0.5,
            "max_attempts": 8,
        }
        config = write_config(tmp_path / "teacher.toml", teacher=teacher)
        ref = Scenario("teacher", copy_workspace(sqa_template, tmp_path / "ref.db"), config, tmp_path, 0.0)
        work_s = timed_reference(ref)
        reference = path_table(ref.db, the_completed_job(ref.db, "teacher"))
        assert {k[0] for k in reference} and len(reference) == 3 * 2
        db = tmp_path / "w.db"
        made: dict[int, str] = {}
        faults = ["500", "429", "drop"]

        def prepare() -> None:
            copy_workspace(sqa_template, db)
            made.clear()

        def tally() -> None:
            """Count the faults the proxy really served (a kill may come before the request that gets one)."""
            for action in proxy.actions:
                if action != "ok":
                    stats.faults[f"teacher: {action} (HTTP fault) around a kill"] += 1

        def between(rng: random.Random) -> None:
            made.update(decide(db, rng, "teacher", "teacher"))
            tally()
            proxy.reset(schedule=[rng.choice(faults)])  # the next run meets a fault on its first request

        def verify() -> None:
            job = the_completed_job(db, "teacher")
            assert not duplicates(db)
            got = path_table(db, job)
            stats.lost["teacher rationales"] += len(set(reference) - set(got))
            assert set(got) == set(reference), "each question answered once, every sample"
            assert {k: v[:2] for k, v in got.items()} == {k: v[:2] for k, v in reference.items()}
            items = query(db, "SELECT status, COUNT(*) FROM job_items WHERE job_id = ? GROUP BY status", (job,))
            assert items == [("done", 3)]
            assert lost_decisions(db, made, "teacher decisions") == 0
            # the cache: running the finished stage again sends nothing
            tally()
            proxy.reset()
            from tests.reliability.harness import cli

            again = cli(db, "run", str(config), "--stage", "teacher")
            assert again.returncode == 0 and proxy.received == 0, again.stderr

        proxy.reset(schedule=["500"])
        s = Scenario(
            "teacher", db, config, tmp_path, work_s, anchor="progress", prepare=prepare, between=between, verify=verify
        )
        record(kill_and_resume(s, kills_per_stage, SEEDS["teacher"]), "teacher", kills_per_stage)


# -- eval ------------------------------------------------------------------------------------------------------------
def test_eval_survives_kill_9(sqa_template, tmp_path: Path, kills_per_stage: int) -> None:
    config = write_config(
        tmp_path / "eval.toml", data={"test_limit": 4}, eval={"baselines": True, "batch_size": 1, "max_new_tokens": 8}
    )
    ref = Scenario("eval", copy_workspace(sqa_template, tmp_path / "ref.db"), config, tmp_path, 0.0)
    work_s = timed_reference(ref)

    def result(db: Path) -> tuple[list, list]:
        job = the_completed_job(db, "eval")
        evaluations = query(db, "SELECT id, n, acc, fmt, len, rep, label FROM evaluations WHERE job_id = ?", (job,))
        assert len(evaluations) == 1, evaluations
        preds = query(
            db,
            'SELECT q."index", p.output, p.answer, p.correct, p.tokens FROM predictions p '
            'JOIN questions q ON q.id = p.question_id WHERE p.evaluation_id = ? ORDER BY q."index"',
            (evaluations[0][0],),
        )
        return [e[1:] for e in evaluations], preds

    reference = result(ref.db)
    assert reference[0][0][0] == 4
    db = tmp_path / "w.db"

    def verify() -> None:
        assert not duplicates(db)
        got = result(db)
        stats.lost["eval predictions"] += len({p[0] for p in reference[1]} - {p[0] for p in got[1]})
        assert got == reference, "predictions or metrics differ from an uninterrupted evaluation"

    s = Scenario(
        "eval",
        db,
        config,
        tmp_path,
        work_s,
        anchor="progress",
        prepare=lambda: copy_workspace(sqa_template, db),
        verify=verify,
    )
    record(kill_and_resume(s, kills_per_stage, SEEDS["eval"]), "eval", kills_per_stage)
