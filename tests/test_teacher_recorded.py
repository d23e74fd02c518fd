"""Recorded teacher rationales (Fine-tune-CoT's text-davinci-002 release in ../shared/data) imported into the
workspace: the published correctness counts come out, a second import adds nothing, the teacher stage
falls back to them, and a file of another task is refused."""

from __future__ import annotations

import json

from sqlalchemy import func
from sqlmodel import select

from db.models import Job, Path, Question
from db.session import session_scope
from engine.config import config_from_dict
from engine.teacher.store import teacher_paths
from sert_tui.cli import main
from tests.conftest import SHARED_DATA

RECORDED = SHARED_DATA / "teacher-text-davinci-002"


def test_import_strategyqa_gives_the_published_counts(sqa, engine, db_path, capsys):
    file = RECORDED / "D_strategy_qa.json"
    argv = ["--db", str(db_path), "teacher", "import", "reasoning-teacher", "--dataset", "sqa", "--file", str(file)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "sqa" and out["imported"] == 2290
    assert out["correct"] == {"train": 856, "test": 368}
    assert out["total"] == {"train": 1603, "test": 687}

    with session_scope(engine) as s:
        job = s.get(Job, out["job"])
        assert job.kind == "teacher" and job.status == "completed"
        assert job.config["source"] == "recorded" and job.label == "recorded text-davinci-002"
        assert s.exec(select(func.count(Path.id)).where(Path.job_id == job.id)).one() == 2290
        q = s.exec(select(Question).where(Question.dataset_id == sqa.id, Question.index == 1)).one()
        path = s.exec(select(Path).where(Path.job_id == job.id, Path.question_id == q.id)).one()
        assert path.source == "teacher" and path.branch == 0 and path.sample == 0
        assert path.text.startswith("The atomic number of hydrogen is 1.")
        assert path.answer == "no" and path.correct is True
        assert len(teacher_paths(s, job.id, split="train", correct_only=True)) == 856

    # Importing again reuses the job and adds nothing.
    assert main([*argv, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["job"] == out["job"] and again["inserted"] == 0 and again["correct"] == out["correct"]
    with session_scope(engine) as s:
        assert s.exec(select(func.count(Path.id))).one() == 2290
        assert len(s.exec(select(Job).where(Job.kind == "teacher")).all()) == 1

    # With no teacher endpoint configured, the stage uses the recorded rationales.
    from engine.pipeline import run_stage

    cfg = config_from_dict({"data": {"dataset": "sqa"}})
    jobs = run_stage(engine, cfg, "teacher", lambda _line: None)
    assert [j.id for j in jobs] == [out["job"]]


def test_import_refuses_a_file_of_another_task(sqa, db_path, capsys):
    file = RECORDED / "D_coin_flip.json"
    rc = main(["--db", str(db_path), "teacher", "import", "reasoning-teacher", "--dataset", "sqa", "--file", str(file)])
    assert rc == 2
    assert "do not match dataset 'sqa'" in capsys.readouterr().err


def test_coin_flip_reports_questions_and_rationales_apart(engine, db_path, capsys):
    """8 coin-flip questions carry 5 rationales each (Fine-tune-CoT's diverse reasoning): the counts of
    questions and of rationales are two numbers, each under its own label, in the text and in --json."""
    from db.session import open_workspace
    from tests.conftest import rt_files

    dataset, split = rt_files("coin_flip")
    argv = ["--db", str(db_path)]
    assert (
        main(
            [*argv, "data", "import", "reasoning-teacher", "--name", "coin", "--dataset", str(dataset)]
            + ["--split", str(split)]
        )
        == 0
    )
    capsys.readouterr()
    file = RECORDED / "D_coin_flip.json"
    records = json.loads(file.read_text())["data"]
    splits = json.loads(split.read_text())
    questions = {name: sum(str(i) in records for i in splits[name]) for name in ("train", "test")}
    rationales = {name: sum(len(records.get(str(i), [])) for i in splits[name]) for name in ("train", "test")}
    assert sum(rationales.values()) - sum(questions.values()) == 8 * 4  # the 8 questions with 5 each

    assert (
        main([*argv, "teacher", "import", "reasoning-teacher", "--dataset", "coin", "--file", str(file), "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["questions"] == questions and out["total"] == rationales
    assert out["imported"] == sum(questions.values()) and out["rationales"] == sum(rationales.values())
    eng = open_workspace(db_path)
    try:
        with session_scope(eng) as s:
            rows = s.exec(
                select(Question.split, Path.question_id, Path.correct)
                .join(Question, Question.id == Path.question_id)
                .where(Path.job_id == out["job"])
            ).all()
    finally:
        eng.dispose()
    with_correct = {name: len({q for sp, q, ok in rows if sp == name and ok}) for name in ("train", "test")}
    correct = {name: sum(1 for sp, _q, ok in rows if sp == name and ok) for name in ("train", "test")}
    assert out["questions_correct"] == with_correct and out["correct"] == correct
    assert out["total"]["train"] == 382 and out["correct"]["train"] == 340  # the figures: rationales

    assert main([*argv, "teacher", "import", "reasoning-teacher", "--dataset", "coin", "--file", str(file)]) == 0
    text = capsys.readouterr().out.strip()
    assert text == (
        f"job {out['job']}: {out['imported']} questions of 'coin', {out['rationales']} rationales ("
        f"train: {with_correct['train']} of {questions['train']} questions with a correct rationale, "
        f"{correct['train']} of {rationales['train']} rationales correct; "
        f"test: {with_correct['test']} of {questions['test']} questions with a correct rationale, "
        f"{correct['test']} of {rationales['test']} rationales correct)"
    )
