"""Each filter job keeps its own verdicts and selection (``filter_verdicts``), and eval finds the model a config
trained by its training fingerprint.

On a real workspace with the StrategyQA data and hand-made paths (the rules read only stored texts and numbers):
two filter jobs over one sample job, the paper's rule and ``require_correct`` (or ``filters.select`` rep2 and
confidence), run in both orders; each config's training set, ``export set``, ``report coverage`` and
``paths list`` follow its own filter job, whatever ran since.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest
from sqlalchemy import text
from sqlmodel import select

from db import app_queries as q
from db.errors import UserError
from db.models import Checkpoint, FilterVerdict, Job, Path
from db.paths_repo import set_decision, write_question_paths
from db.queries import split_questions
from db.session import current_revision, head_revision, make_engine, migrate, open_workspace, session_scope
from engine.config import ExperimentConfig, config_from_dict
from engine.jobs import create_job
from engine.pipeline import run_stage
from engine.sampling.stage import sample_fingerprint
from sert_tui.cli import main

GOOD = (
    " Frost forms when the ground cools below freezing overnight, and many universities hold their "
    "commencement ceremonies in early spring when cold mornings are common."
)
PAPER = {}
CORRECT = {"require_correct": True}
CONFIDENCE = {"select": "confidence"}


def quiet(_line: str) -> None:
    pass


def make_config(filters: dict, name: str = "verdicts") -> ExperimentConfig:
    return config_from_dict({"name": name, "data": {"dataset": "sqa", "train_limit": 3}, "filters": filters})


def sample_job(engine, dataset, config: ExperimentConfig) -> tuple[int, dict[int, dict[int, int]]]:
    """A completed sample job with 4 paths per question; returns its id and {question: {branch: path id}}.

    Branch 1 is correct with a high confidence, branch 2 is wrong with the lowest rep-2 and a low confidence,
    branch 0 is a bare answer and branch 3 repeats itself: the paper's rule selects branch 2, ``require_correct``
    and ``select = "confidence"`` select branch 1."""
    job = create_job(
        engine, "sample", config.model_dump(mode="json"), fp=sample_fingerprint(config, dataset), dataset_id=dataset.id
    )
    ids: dict[int, dict[int, int]] = {}
    with session_scope(engine) as s:
        for question in split_questions(s, dataset.id, config.data.split, config.data.train_limit):
            gold = question.answer
            wrong = "no" if gold == "yes" else "yes"
            rows = [
                dict(branch=0, sample=0, text=" Yes.", tokens=3, rep2=0.0, perplexity=1.5),
                dict(
                    branch=1,
                    sample=0,
                    text=f"{GOOD} So the answer is {gold}.",
                    tokens=30,
                    rep2=0.10,
                    perplexity=9.0,
                    confidence=0.9,
                ),
                dict(
                    branch=2,
                    sample=0,
                    text=f"{GOOD} So the answer is {wrong}.",
                    tokens=33,
                    rep2=0.05,
                    perplexity=12.0,
                    confidence=0.2,
                ),
                dict(branch=3, sample=0, text=GOOD, tokens=40, rep2=0.30, perplexity=6.0),
            ]
            write_question_paths(s, job.id, question.id, rows)
        s.get(Job, job.id).status = "completed"
        for p in s.exec(select(Path).where(Path.job_id == job.id)).all():
            ids.setdefault(p.question_id, {})[p.branch] = p.id
    return job.id, ids


def own_selection(engine, filter_job_id: int) -> set[int]:
    with session_scope(engine) as s:
        return set(
            s.exec(
                select(FilterVerdict.path_id).where(
                    FilterVerdict.filter_job_id == filter_job_id,
                    FilterVerdict.selected == True,  # noqa: E712
                )
            ).all()
        )


def branch(ids: dict[int, dict[int, int]], b: int) -> set[int]:
    return {by_branch[b] for by_branch in ids.values()}


def export_set(db_path, config: ExperimentConfig, tmp_path: FsPath, name: str) -> set[int]:
    config_file = tmp_path / f"{name}.toml"
    filters = "\n".join(f"{k} = {json.dumps(v)}" for k, v in config.filters.model_dump().items())
    config_file.write_text(
        f'name = "{config.name}"\n[data]\ndataset = "sqa"\ntrain_limit = 3\n[filters]\n{filters}\n', encoding="utf-8"
    )
    out = tmp_path / f"{name}.jsonl"
    assert (
        main(["--db", str(db_path), "export", "set", str(config_file), "--stage", "self-train", "--out", str(out)]) == 0
    )
    return {json.loads(line)["path_id"] for line in out.read_text(encoding="utf-8").splitlines()}


@pytest.mark.parametrize("order", [("paper", "correct"), ("correct", "paper")])
def test_each_config_trains_and_exports_its_own_filter_jobs_selection(engine, db_path, sqa, tmp_path, order, capsys):
    from engine.training.stage import sert_plan

    configs = {"paper": make_config(PAPER), "correct": make_config(CORRECT)}
    sample_id, ids = sample_job(engine, sqa, configs["paper"])
    with session_scope(engine) as s:  # a person's decisions, kept on the paths whatever filter job runs
        set_decision(s, ids[min(ids)][3], "accepted")  # a repetitive path accepted by hand
        rejected = ids[max(ids)]
        set_decision(s, rejected[1], "rejected")
        set_decision(s, rejected[2], "rejected")
    jobs = {name: run_stage(engine, configs[name], "filter", quiet)[0] for name in order}
    assert jobs["paper"].id != jobs["correct"].id
    assert own_selection(engine, jobs["paper"].id) == branch(ids, 2)
    assert own_selection(engine, jobs["correct"].id) == branch(ids, 1)
    with session_scope(engine) as s:  # the rows show the filter job that ran last
        assert s.get(Job, sample_id).summary["filter_job"] == jobs[order[-1]].id

    accepted = {ids[min(ids)][3]}
    rejected_ids = {rejected[1], rejected[2]}
    for name, config in configs.items():
        wanted = (own_selection(engine, jobs[name].id) - rejected_ids) | accepted
        plan = sert_plan(engine, config, sqa)
        assert plan.parent_id == jobs[name].id, name
        assert {smp.path_id for smp in plan.samples} == wanted, name
        assert export_set(db_path, config, tmp_path, name) == wanted, name
        # paths list of the filter job: its own selection
        capsys.readouterr()
        assert main(["--db", str(db_path), "paths", "list", "--job", str(jobs[name].id), "--selected", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {r["id"] for r in listed} == own_selection(engine, jobs[name].id), name

    # Running the first config's filter stage again reuses its job and shows its verdicts on the rows again.
    first = order[0]
    [again] = run_stage(engine, configs[first], "filter", quiet)
    assert again.id == jobs[first].id
    with session_scope(engine) as s:
        assert s.get(Job, sample_id).summary["filter_job"] == again.id
        shown = set(s.exec(select(Path.id).where(Path.job_id == sample_id, Path.selected == True)).all())  # noqa: E712
    assert shown == own_selection(engine, again.id)


def test_report_coverage_of_an_older_filter_job_reports_its_own_verdicts(engine, db_path, sqa, capsys):
    sample_id, ids = sample_job(engine, sqa, make_config(PAPER))
    [paper] = run_stage(engine, make_config(PAPER), "filter", quiet)
    [correct] = run_stage(engine, make_config(CORRECT), "filter", quiet)

    def report(job_id: int) -> dict:
        assert main(["--db", str(db_path), "report", "coverage", "--job", str(job_id), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    old, new, sample = report(paper.id), report(correct.id), report(sample_id)
    n = len(ids)
    assert old["questions"] == new["questions"] == n
    assert old["any_correct"] == new["any_correct"] == 1.0  # branch 1 of every question is correct
    assert old["selected_correct"] == 0.0  # the paper's rule kept the wrong branch 2 everywhere
    assert new["selected_correct"] == 1.0  # require_correct kept branch 1
    assert sample["selected_correct"] == 1.0  # the sample job: what its rows carry (the newest filter job's)


def test_paths_screen_reads_of_a_filter_job_use_its_own_rows(engine, sqa):
    sample_id, ids = sample_job(engine, sqa, make_config(PAPER))
    [paper] = run_stage(engine, make_config(PAPER), "filter", quiet)
    [correct] = run_stage(engine, make_config(CORRECT), "filter", quiet)
    with session_scope(engine) as s:
        set_decision(s, ids[min(ids)][2], "rejected")
    with engine.connect() as conn:
        assert q.verdicts_job_id(conn, paper.id) == paper.id and q.verdicts_job_id(conn, sample_id) is None
        page = q.page_paths(conn, sample_id, q.PathFilter(selected=True), 0, 100, verdicts_job=paper.id)
        assert {r.id for r in page.rows} == branch(ids, 2)
        assert all("correctness" not in r.verdicts for r in page.rows)
        shown = q.page_paths(conn, sample_id, q.PathFilter(selected=True), 0, 100)  # the rows: the newest's
        assert {r.id for r in shown.rows} == branch(ids, 1)
        assert q.last_anchor(conn, sample_id, q.PathFilter(selected=True), 2, paper.id) == sorted(branch(ids, 2))[-2]
        counts = q.path_counts(conn, sample_id, verdicts_job=paper.id)
        assert (counts.selected, counts.selected_kept, counts.training_set) == (len(ids), len(ids) - 1, len(ids) - 1)
        assert counts.passed == 2 * len(ids)  # branches 1 and 2 pass the paper's rules
        now = q.path_counts(conn, sample_id)
        assert (now.selected, now.passed, now.training_set) == (len(ids), len(ids), len(ids))
        question = min(ids)
        assert q.question_passed_undecided(conn, sample_id, question, paper.id) == [ids[question][1]]
        assert q.question_passed_undecided(conn, sample_id, question) == [ids[question][1]]


def test_a_completed_filter_job_is_reused_whatever_ran_since(engine, sqa):
    sample_id, _ids = sample_job(engine, sqa, make_config(PAPER))
    [paper] = run_stage(engine, make_config(PAPER), "filter", quiet)
    [correct] = run_stage(engine, make_config(CORRECT), "filter", quiet)
    [paper_again] = run_stage(engine, make_config(PAPER), "filter", quiet)
    [correct_again] = run_stage(engine, make_config(CORRECT), "filter", quiet)
    assert (paper_again.id, correct_again.id) == (paper.id, correct.id)
    with session_scope(engine) as s:
        assert len(s.exec(select(Job).where(Job.kind == "filter")).all()) == 2


def test_training_without_a_filter_job_of_its_settings_says_run_the_filter_stage(engine, sqa):
    from engine.training.stage import sert_plan

    sample_job(engine, sqa, make_config(PAPER))
    run_stage(engine, make_config(CORRECT), "filter", quiet)
    with pytest.raises(UserError, match="run --stage filter first"):
        sert_plan(engine, make_config(PAPER), sqa)


# -- the migration ----------------------------------------------------------------------------------------
def test_upgrade_from_0003_backfills_the_current_filter_jobs_verdicts_and_keeps_decisions(db_path: FsPath) -> None:
    engine = make_engine(db_path)
    migrate(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, task, answer_type, source, origin, created_at, meta) "
                "VALUES ('old', 'strategy_qa', 'yes_no', 'jsonl', 'f', '2026-01-01 00:00:00', '{}')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO questions (dataset_id, split, "index", position, text, answer, meta) '
                "VALUES (1, 'train', 0, 0, 'Is it?', 'yes', '{}')"
            )
        )
        job = (
            "INSERT INTO jobs (id, kind, status, config, parent_id, label, fingerprint, cancel_requested, created_at, "
            "progress_done, progress_total, message, host, summary) VALUES "
        )
        # sample job 1; filter jobs 2 (older, overwritten) and 3 (its current one); sample job 4 never filtered
        conn.execute(text(job + "(1, 'sample', 'completed', '{}', NULL, '', 's', 0, '2026-01-01', 1, 1, '', '', "
                          """'{"filter_job": 3}')"""))  # fmt: skip
        for fid in (2, 3):
            conn.execute(text(job + f"({fid}, 'filter', 'completed', '{{}}', 1, '', 'f{fid}', 0, '2026-01-01', "
                              "1, 1, '', '', '{}')"))  # fmt: skip
        conn.execute(text(job + "(4, 'sample', 'completed', '{}', NULL, '', 't', 0, '2026-01-01', 1, 1, '', '', '{}')"))
        path = (
            "INSERT INTO paths (id, job_id, question_id, source, branch, sample, branch_token, text, tokens, rep2, "
            "verdicts, passed, selected, answer, correct, decision, decided_at, created_at) VALUES "
        )
        verdicts = json.dumps({"pattern": {"pass": True, "reason": ""}})
        conn.execute(
            text(
                path + "(1, 1, 1, 'self', 0, 0, ' A', ' A path.', 30, 0.1, :v, 1, 1, 'yes', 1, 'rejected', "
                "'2026-01-02 00:00:00', '2026-01-01')"
            ),  # fmt: skip
            {"v": verdicts},
        )
        conn.execute(
            text(
                path + "(2, 1, 1, 'self', 1, 0, ' B', ' B path.', 3, 0.0, :v, 0, 0, NULL, 0, 'accepted', "
                "'2026-01-02 00:00:00', '2026-01-01')"
            ),  # fmt: skip
            {"v": json.dumps({"length": {"pass": False, "reason": "3 tokens < 25"}})},
        )
        conn.execute(
            text(
                path + "(3, 4, 1, 'self', 0, 0, ' C', ' C path.', 30, 0.1, '{}', NULL, 0, NULL, NULL, NULL, NULL, "
                "'2026-01-01')"
            )  # fmt: skip
        )
    engine.dispose()

    upgraded = open_workspace(db_path)
    assert current_revision(upgraded) == head_revision()
    with upgraded.connect() as conn:
        rows = conn.execute(
            text("SELECT filter_job_id, path_id, verdicts, passed, selected FROM filter_verdicts ORDER BY path_id")
        ).all()
        assert [(r[0], r[1], json.loads(r[2]), bool(r[3]), bool(r[4])) for r in rows] == [
            (3, 1, json.loads(verdicts), True, True),
            (3, 2, {"length": {"pass": False, "reason": "3 tokens < 25"}}, False, False),
        ]
        kept = conn.execute(text("SELECT id, decision, decided_at, passed, selected FROM paths ORDER BY id")).all()
        assert [(r[0], r[1], r[3], r[4]) for r in kept] == [
            (1, "rejected", 1, 1),
            (2, "accepted", 0, 0),
            (3, None, None, 0),
        ]
        assert kept[0][2] is not None
        # the training set of filter job 3: selected unless rejected, plus accepted by hand
        from sqlalchemy import select as sa_select

        ids = conn.execute(sa_select(Path.id).where(Path.job_id == 1, q.in_training_set(3))).scalars().all()
        assert ids == [2]
    with session_scope(upgraded) as s:  # the older filter job has no stored verdicts: its config must refilter
        from engine.filtering.stage import has_own_verdicts

        assert not has_own_verdicts(upgraded, s.get(Job, 2), s.get(Job, 1))
        assert has_own_verdicts(upgraded, s.get(Job, 3), s.get(Job, 1))
    upgraded.dispose()


# -- eval: the model this config trained, by its training fingerprint -------------------------------------------
def fake_training_job(engine, config: ExperimentConfig, dataset, tmp_path: FsPath, name: str) -> int:
    """A completed self-train job as ``run --stage self-train`` of ``config`` would have left it (its fingerprint,
    parent filter job and a final checkpoint), without training."""
    from engine.training.stage import sert_plan, train_fingerprint

    plan = sert_plan(engine, config, dataset)
    job = create_job(
        engine,
        "self-train",
        config.model_dump(mode="json"),
        fp=train_fingerprint(config, plan, dataset),
        dataset_id=dataset.id,
        parent_id=plan.parent_id,
        label=plan.label,
    )
    with session_scope(engine) as s:
        s.get(Job, job.id).status = "completed"
        s.add(Checkpoint(job_id=job.id, step=1, path=str(tmp_path / f"ckpt-{name}"), is_final=True))
    return job.id  # type: ignore[return-value]


@pytest.mark.parametrize("order", [("rep2", "confidence"), ("confidence", "rep2")])
def test_eval_of_each_config_evaluates_its_own_sert_model(engine, sqa, tmp_path, monkeypatch, order):
    """Two configs that differ only in ``filters.select``: each one's ``run --stage eval`` evaluates its own SERT
    checkpoint, whichever trained last; a config that trained none says which model it evaluates instead, and
    under ``strict`` (the study) refuses."""
    import engine.evaluation.stage as eval_stage

    configs = {"rep2": make_config(PAPER, "same"), "confidence": make_config(CONFIDENCE, "same")}
    configs = {
        k: c.model_copy(update={"eval": c.eval.model_copy(update={"baselines": False})}) for k, c in configs.items()
    }
    sample_job(engine, sqa, configs["rep2"])
    trained = {}
    for name in order:
        run_stage(engine, configs[name], "filter", quiet)
        trained[name] = fake_training_job(engine, configs[name], sqa, tmp_path, name)
    evaluated: list = []
    monkeypatch.setattr(eval_stage, "evaluate", lambda _db, _cfg, _ds, target, _echo: evaluated.append(target))
    for name, config in configs.items():
        evaluated.clear()
        lines: list[str] = []
        run_stage(engine, config, "eval", lines.append)
        assert [(t.label, t.job.id) for t in evaluated] == [("SERT", trained[name])], name
        assert not any("not this config's" in line for line in lines), lines

    # A third config (require_correct) trained nothing: the newest SERT model, said so; strict: an error.
    other = make_config(CORRECT, "same").model_copy(update={"eval": configs["rep2"].eval})
    run_stage(engine, other, "filter", quiet)
    evaluated.clear()
    lines = []
    run_stage(engine, other, "eval", lines.append)
    assert [t.job.id for t in evaluated] == [trained[order[-1]]]
    assert any(
        f"evaluating self-train job {trained[order[-1]]}" in line and "not this config's" in line for line in lines
    )
    with pytest.raises(UserError, match="no SERT model trained by this config"):
        eval_stage.run_eval(engine, other, print, strict=True)


def test_a_training_set_smaller_than_one_batch_is_named_in_the_plan(engine, sqa):
    """require_correct on a set where few paths are right can leave SERT a sample or two: the plan says so, with
    the filter job whose report shows why, and says nothing when a full batch is there."""
    from engine.training.stage import sert_plan

    config = make_config(CORRECT)
    sample_job(engine, sqa, config)
    [job] = run_stage(engine, config, "filter", quiet)
    plan = sert_plan(engine, config, sqa)
    n = len(plan.samples)
    assert 0 < n < config.train.batch_size
    assert (
        f"warning: only {n} training sample(s), fewer than one batch of {config.train.batch_size}: the filters kept "
        f"few paths (sert-tui report filters --job {job.id} shows which rule removed them)"
    ) in plan.notes
    full = config.model_copy(update={"train": config.train.model_copy(update={"batch_size": n})})
    assert not any(note.startswith("warning") for note in sert_plan(engine, full, sqa).notes)
