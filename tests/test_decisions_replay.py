"""The journal of pending decisions never loses to time: a replay never overwrites a decision made later,
writes the time the person decided, is applied by every reader of decisions before it reads (training,
export, ``paths``) or stops it with an ``error:`` naming the journal, and a hang-up whose drain fails says
so on standard error with what could not be saved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from db import decision_journal as journal
from db.errors import UserError
from db.models import Job
from db.models import Path as PathRow
from db.paths_repo import set_decision
from db.session import session_scope
from sert_tui import hangup
from sert_tui.cli import main
from sert_tui.services.decisions import DecisionWriter
from tests import test_decisions_durable, test_export
from tests.test_app_helpers import decisions
from tests.test_decisions_durable import ids_of, locked

# the fixtures of those files: a workspace with a sample and a filter job; a config with its filtered jobs
workspace = test_decisions_durable.workspace
filtered = test_export.filtered

T0 = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)


def decided_at(engine, path_id: int) -> datetime | None:
    with session_scope(engine) as s:
        row = s.get(PathRow, path_id)
        assert row is not None
        return row.decided_at


# -- stale decisions ---------------------------------------------------------------------------------------
def test_a_replay_skips_a_kept_decision_older_than_the_paths_own(workspace) -> None:
    """Case 1: while the app's decisions wait in the journal, another writer (``sert-tui paths``) decides the
    same paths later; the replay keeps the later decisions, a cleared one included, and says how many it
    skipped."""
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    journal.append(path, [([(ids[0], "accepted"), (ids[1], "accepted"), (ids[2], "ignored")], T0)])
    later = T0 + timedelta(minutes=5)
    with session_scope(engine) as s:
        set_decision(s, ids[0], "rejected", at=later)
        set_decision(s, ids[1], None, at=later)
    result = journal.replay(engine)
    assert result is not None and result.done
    assert (result.written, result.stale, result.missing) == (1, 2, 0)
    assert result.message() == (
        f"re-applied 1 decision that could not be written earlier (kept in {path}); 2 older decisions skipped "
        "as stale (the workspace holds a decision made later on those paths)"
    )
    got = decisions(engine, workspace["sample"])
    assert (got[ids[0]], got[ids[1]], got[ids[2]]) == ("rejected", None, "ignored")
    assert decided_at(engine, ids[0]) == later and decided_at(engine, ids[1]) == later
    assert not path.exists()


def test_a_batch_neither_written_nor_kept_does_not_return_over_a_later_decision(workspace, monkeypatch) -> None:
    """Case 2: batch A fails the workspace write and the journal append; ``committed`` moves past it and a
    later batch B on the same path is written directly; the close's drain then keeps A, and the next start's
    replay must leave B in place."""
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    append = journal.append

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    reports: list[tuple[str, str]] = []
    writer = DecisionWriter(engine, report=lambda m, s: reports.append((m, s)))
    writer.attempts, writer.busy_timeout_s = 1, 0.05
    try:
        monkeypatch.setattr(journal, "append", broken)
        with locked(db):
            a = writer.submit([(ids[0], "accepted")])
            writer.wait_for(a)
        assert any("could not be written nor kept" in m for m, _s in reports)
        assert writer.committed == a and not path.exists()  # A is still pending, yet counted as settled
        monkeypatch.setattr(journal, "append", append)
        b = writer.submit([(ids[0], "rejected")])
        writer.wait_for(b)
        assert decisions(engine, workspace["sample"])[ids[0]] == "rejected"
    finally:
        writer.close(timeout=0)
    assert writer.kept_on_close == 1 and path.exists()  # A, kept at close
    result = journal.replay(engine)
    assert result is not None and (result.written, result.stale) == (0, 1)
    assert "1 older decision skipped as stale" in (result.message() or "")
    assert decisions(engine, workspace["sample"])[ids[0]] == "rejected"


# -- the review clock --------------------------------------------------------------------------------------
def test_a_replayed_decision_carries_the_time_the_person_decided(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    with session_scope(engine) as s:
        set_decision(s, ids[1], "accepted", at=T0 - timedelta(hours=1))
    cleared = T0 + timedelta(seconds=3, microseconds=7)
    journal.append(journal.journal_path(db), [([(ids[0], "accepted")], T0), ([(ids[1], None)], cleared)])
    result = journal.replay(engine)
    assert result is not None and result.written == 2
    assert decided_at(engine, ids[0]) == T0  # not the time of the replay
    assert decided_at(engine, ids[1]) == cleared  # a clear is a decision too: its time is kept


# -- every reader applies the journal first ------------------------------------------------------------------
def _journal_a_change_of_mind(engine, db_path, sample_id: int) -> tuple[int, int]:
    """As the app does when the workspace is busy: reject a selected path and accept another of its question,
    kept in the journal. Returns (rejected, accepted)."""
    with session_scope(engine) as s:
        chosen = s.exec(select(PathRow).where(PathRow.job_id == sample_id, PathRow.selected)).first()
        assert chosen is not None
        other = s.exec(
            select(PathRow).where(
                PathRow.job_id == sample_id, PathRow.question_id == chosen.question_id, PathRow.branch == 1
            )
        ).one()
        pair = (chosen.id, other.id)
    journal.append(journal.journal_path(db_path), [([(pair[0], "rejected"), (pair[1], "accepted")], None)])
    return pair  # type: ignore[return-value]


def test_run_self_train_trains_on_the_journaled_decisions(engine, sqa, db_path, filtered, monkeypatch) -> None:
    from engine.config import load_config
    from engine.pipeline import run_stage
    from engine.training import stage

    rejected, accepted = _journal_a_change_of_mind(engine, db_path, filtered["sample"])
    planned = []

    def run_plan(database, config, dataset, plan, echo):  # the plan, without the training
        planned.append(plan)
        with session_scope(database) as s:
            return s.get(Job, filtered["filter"])

    monkeypatch.setattr(stage, "run_plan", run_plan)
    lines: list[str] = []
    run_stage(engine, load_config(filtered["config"]), "self-train", lines.append)
    [plan] = planned
    used = {smp.path_id for smp in plan.samples}
    assert accepted in used and rejected not in used
    path = journal.journal_path(db_path)
    assert lines[0] == f"note: re-applied 2 decisions that could not be written earlier (kept in {path})"
    assert not path.exists()


def test_export_set_includes_the_journaled_decisions(engine, db_path, filtered, tmp_path, capsys) -> None:
    rejected, accepted = _journal_a_change_of_mind(engine, db_path, filtered["sample"])
    out = tmp_path / "sert.jsonl"
    code = main(
        ["--db", str(db_path), "export", "set", str(filtered["config"]), "--stage", "self-train"]
        + ["--out", str(out), "--json"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    ids = [json.loads(line)["path_id"] for line in out.read_text().splitlines()]
    assert accepted in ids and rejected not in ids
    assert "note: re-applied 2 decisions" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{config}", "--stage", "self-train"],
        ["export", "set", "{config}", "--stage", "self-train", "--out", "{out}"],
        ["export", "paths", "--job", "{sample}", "--out", "{out}"],
        ["paths", "list", "--job", "{sample}"],
        ["paths", "reject-duplicates", "--job", "{sample}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_reader_stops_with_an_error_naming_a_journal_it_cannot_apply(
    argv,
    db_path,
    filtered,
    tmp_path,
    capsys,
) -> None:
    path = journal.journal_path(db_path)
    path.mkdir()  # a journal that cannot be read
    values = {"config": filtered["config"], "out": tmp_path / "out.jsonl", "sample": filtered["sample"]}
    code = main(["--db", str(db_path), *(a.format(**values) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: the decisions kept in {path} could not be read" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_a_busy_workspace_stops_a_reader_with_the_journal_named(workspace) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    journal.append(path, [([(ids[0], "accepted")], None)])
    with locked(db), pytest.raises(UserError) as raised:
        journal.apply_pending(engine, attempts=1, busy_timeout_s=0.05)
    assert str(raised.value).startswith(f"1 decision kept in {path} could not be applied (database is locked)")
    assert path.exists()


# -- a hang-up whose drain fails ---------------------------------------------------------------------------
def test_a_failed_drain_is_said_on_stderr(capfd) -> None:
    class Failing:
        def drain(self, timeout: float) -> None:
            raise OSError(5, "Input/output error")

        def rescue(self, error: BaseException) -> str:
            return f"rescued after {error}"

    writer = Failing()
    hangup.PENDING_WRITES.add(writer)
    try:
        assert hangup.drain_pending(0.01) == 1
    finally:
        hangup.PENDING_WRITES.discard(writer)
    assert capfd.readouterr().err == "sert-tui: rescued after [Errno 5] Input/output error\n"


@pytest.mark.parametrize("second_try", [True, False], ids=["kept-on-a-second-try", "not-kept"])
def test_a_hang_up_keeps_or_prints_what_its_drain_could_not_save(workspace, monkeypatch, capfd, second_try) -> None:
    engine, db = workspace["engine"], workspace["db"]
    ids = ids_of(engine, workspace["sample"])
    path = journal.journal_path(db)
    append = journal.append
    calls: list[int] = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1 or not second_try:
            raise OSError(28, "No space left on device")
        return append(*args, **kwargs)

    writer = DecisionWriter(engine)
    writer.attempts, writer.busy_timeout_s = 1, 30.0
    try:
        with locked(db):
            monkeypatch.setattr(journal, "append", flaky)
            writer.submit([(ids[0], "accepted"), (ids[1], "rejected")])
            assert hangup.drain_pending(0.05) == 1
    finally:
        writer.close(timeout=0)
    err = capfd.readouterr().err
    if second_try:
        assert err == (
            "sert-tui: decisions could not be kept at first ([Errno 28] No space left on device); "
            f"2 decisions (1 batch) kept in {path} on a second try\n"
        )
        [entry] = journal.read(path)[0]
        assert entry.changes == [(ids[0], "accepted"), (ids[1], "rejected")]
    else:
        assert err.startswith("sert-tui: 2 decisions could not be saved ([Errno 28] No space left on device; then")
        record = json.loads(err.rstrip("\n").splitlines()[-1])
        assert record["decisions"] == [
            {"path": ids[0], "decision": "accepted"},
            {"path": ids[1], "decision": "rejected"},
        ]
        assert not path.exists()
