"""Metrics on hand-written outputs, lineage labels, batched greedy generation, and `report runs`."""

from __future__ import annotations

import json

import pytest

from db.models import Checkpoint, Evaluation, Job
from db.session import session_scope
from engine.evaluation import lineage
from engine.evaluation.metrics import aggregate, reasoning_part, rep1, rep_n, score_output
from engine.evaluation.stats import wilson_interval
from engine.jobs import create_job

VOCAB: dict[str, int] = {}


def tok(text: str) -> list[int]:
    """A whitespace stand-in for the student tokenizer: one id per distinct word."""
    return [VOCAB.setdefault(w, len(VOCAB)) for w in text.split()]


# -- metrics ------------------------------------------------------------------------------------------------
def test_repetition_rates():
    assert rep1([]) == 0.0
    assert rep1([1, 2, 3, 4]) == 0.0
    assert rep1([1, 1, 1, 1]) == 0.75
    assert rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)
    assert rep_n([1, 2, 3], 4) == 0.0


def test_reasoning_part_drops_the_trigger_and_the_answer_sentence():
    text = " Let's think step by step. Cats purr. So the answer is yes."
    assert reasoning_part(text) == "Cats purr."
    assert reasoning_part(" No marker here") == "No marker here"
    assert reasoning_part(" Therefore, the answer is no.") == ""


def test_a_well_formed_correct_output():
    s = score_output(" Water is a liquid and it is wet. So the answer is yes.", "yes", "yes_no", tok)
    assert (s.answer, s.correct, s.well_formed, s.marker, s.degenerate) == ("yes", True, True, True, False)
    assert s.reasoning_tokens == 8  # "Water is a liquid and it is wet."
    assert s.rep == pytest.approx(1 - 7 / 8)  # "is" twice


def test_no_marker_means_not_well_formed_but_the_last_candidate_still_counts():
    s = score_output(" Maybe no, but then yes", "yes", "yes_no", tok)
    assert s.answer == "yes" and s.correct and not s.well_formed and not s.marker
    assert s.reasoning_tokens == 5


def test_marker_without_a_parseable_answer_is_not_well_formed():
    s = score_output(" It rains. So the answer is unclear.", "no", "yes_no", tok)
    assert s.marker and not s.well_formed and not s.correct


def test_a_repetition_loop_is_degenerate():
    loop = " The cat is here." * 12 + " So the answer is no."
    s = score_output(loop, "no", "yes_no", tok)
    assert s.correct and s.marker and s.degenerate and not s.well_formed


def test_answers_only_output_has_no_reasoning():
    s = score_output(" So the answer is C.", "C", "choice", tok, letters="ABCDE")
    assert s.correct and s.well_formed and s.reasoning_tokens == 0 and s.rep == 0.0


def test_aggregate():
    outs = [
        score_output(" A b. So the answer is yes.", "yes", "yes_no", tok),
        score_output(" a a a a. So the answer is no.", "yes", "yes_no", tok),
        score_output(" nothing", "no", "yes_no", tok),
    ]
    m = aggregate(outs)
    assert m["n"] == 3
    assert m["acc"] == pytest.approx(1 / 3)
    assert m["fmt"] == pytest.approx(2 / 3)
    assert m["len"] == pytest.approx((2 + 4 + 1) / 3)
    assert m["rep"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert aggregate([])["acc"] is None


# -- lineage ------------------------------------------------------------------------------------------------
def test_label_for():
    assert lineage.label_for("finetune", None) == "Finetune"
    assert lineage.label_for("self-train", "filter") == "SERT"
    assert lineage.label_for("distill", "teacher") == "RD"
    assert lineage.label_for("distill", "self-train") == "SERT+RD"
    assert lineage.label_for("eval", None) == "zero-shot"


def test_job_label_follows_parents(engine, sqa):
    teacher = create_job(engine, "teacher", {}, dataset_id=sqa.id)
    filt = create_job(engine, "filter", {}, dataset_id=sqa.id)
    sert = create_job(engine, "self-train", {}, dataset_id=sqa.id, parent_id=filt.id)
    rd = create_job(engine, "distill", {}, dataset_id=sqa.id, parent_id=teacher.id)
    sert_rd = create_job(engine, "distill", {}, dataset_id=sqa.id, parent_id=sert.id)
    ft = create_job(engine, "finetune", {}, dataset_id=sqa.id)
    evals = {
        None: create_job(engine, "eval", {}, dataset_id=sqa.id),
        **{j.id: create_job(engine, "eval", {}, dataset_id=sqa.id, parent_id=j.id) for j in (sert, rd, sert_rd, ft)},
    }
    with session_scope(engine) as s:
        got = {k: lineage.job_label(s, s.get(Job, e.id)) for k, e in evals.items()}
    assert got == {None: "zero-shot", sert.id: "SERT", rd.id: "RD", sert_rd.id: "SERT+RD", ft.id: "Finetune"}


# -- generation ---------------------------------------------------------------------------------------------
def test_batched_greedy_equals_one_at_a_time():
    """Left padding and the attention mask make a batch decode exactly like single prompts."""
    from engine.evaluation.generate import greedy_batches
    from engine.models import load_tokenizer
    from tests.conftest import tiny_llama

    tokenizer = load_tokenizer("default")
    model = tiny_llama(len(tokenizer), max_position_embeddings=256).eval()
    items = [
        (0, "Question: Is water wet? Answer:"),
        (1, "Question: Would a pear sink in water if it were made of lead? Answer:"),
        (2, "Question: Yes? Answer:"),
    ]
    batched = {
        g.key: g for batch in greedy_batches(model, tokenizer, items, max_new_tokens=8, batch_size=3) for g in batch
    }
    single = {
        g.key: g for batch in greedy_batches(model, tokenizer, items, max_new_tokens=8, batch_size=1) for g in batch
    }
    assert set(batched) == {0, 1, 2}
    for key in batched:
        assert batched[key].token_ids == single[key].token_ids
        assert 0 < len(batched[key].token_ids) <= 8
        assert batched[key].text == tokenizer.decode(batched[key].token_ids, skip_special_tokens=True)


# -- which models `run --stage eval` evaluates ---------------------------------------------------------------
def test_eval_job_and_eval_checkpoint_name_one_model(engine, sqa, tmp_path):
    from db.errors import UserError
    from engine.config import config_from_dict
    from engine.evaluation.stage import chosen_target, trained_by

    def cfg(**ev):
        return config_from_dict({"name": "exp", "data": {"dataset": "sqa"}, "eval": ev})

    with pytest.raises(UserError, match="set one of them"):
        chosen_target(engine, cfg(job=1, checkpoint="x"))
    sample = create_job(engine, "sample", {}, dataset_id=sqa.id)
    with pytest.raises(UserError, match=f"eval.job: job {sample.id} is not a training job"):
        chosen_target(engine, cfg(job=sample.id))
    mine = cfg().model_dump(mode="json")
    finetune = create_job(engine, "finetune", mine, dataset_id=sqa.id)
    with pytest.raises(UserError, match=f"finetune job {finetune.id} has no checkpoint yet"):
        chosen_target(engine, cfg(job=finetune.id))
    step = tmp_path / "checkpoints" / f"job-{finetune.id}" / "step-3"
    with session_scope(engine) as s:
        s.add(Checkpoint(job_id=finetune.id, step=3, path=str(step), is_final=False))
    by_job = chosen_target(engine, cfg(job=finetune.id))  # no final checkpoint: the newest one
    assert (by_job.label, by_job.model_ref, by_job.job.id) == ("Finetune", str(step), finetune.id)
    by_path = chosen_target(engine, cfg(checkpoint=str(step)))
    assert (by_path.label, by_path.checkpoint.id) == ("Finetune", by_job.checkpoint.id)
    with pytest.raises(UserError, match="is not a checkpoint of this workspace"):
        chosen_target(engine, cfg(checkpoint=str(tmp_path / "elsewhere")))
    # the default choice prefers the jobs this config trained: same name, data and train settings
    with session_scope(engine) as s:
        job = s.get(Job, finetune.id)
    assert trained_by(job, cfg()) and trained_by(job, cfg(split="validation"))  # eval settings do not matter
    other = config_from_dict({"name": "exp", "data": {"dataset": "sqa"}, "train": {"lr": 1e-4}})
    assert not trained_by(job, other)


# -- report runs --------------------------------------------------------------------------------------------
def _evaluation(engine, dataset_id, label, acc, parent=None, ckpt=None, student="default"):
    """A completed eval job with its evaluation row (the reports show completed ones only)."""
    job = create_job(engine, "eval", {"student": {"model": student}}, dataset_id=dataset_id, parent_id=parent)
    with session_scope(engine) as s:
        s.get(Job, job.id).status = "completed"  # type: ignore[union-attr]
        s.add(
            Evaluation(
                job_id=job.id,
                checkpoint_id=ckpt,
                model_ref=student,
                label=label,
                dataset_id=dataset_id,
                split="test",
                n=10,
                acc=acc,
                fmt=0.9,
                len=12.5,
                rep=0.25,
            )
        )
    return job


def test_report_runs_json_and_table(engine, sqa, db_path, capsys):
    from sert_tui.cli import main

    sert = create_job(engine, "self-train", {}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        ckpt = Checkpoint(job_id=sert.id, step=3, path="/w/checkpoints/job-1/step-3", is_final=True)
        s.add(ckpt)
        s.flush()
        ckpt_id = ckpt.id
    _evaluation(engine, sqa.id, "zero-shot", 0.5)
    _evaluation(engine, sqa.id, "SERT", 0.4, parent=sert.id, ckpt=ckpt_id)
    _evaluation(engine, sqa.id, "SERT", 0.6, parent=sert.id, ckpt=ckpt_id)  # newer: wins the Table II cell

    assert main(["--db", str(db_path), "report", "runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == ["zero-shot", "SERT", "SERT"]
    keys = {"label", "checkpoint", "dataset", "split", "n", "acc", "acc_ci", "fmt", "fmt_ci", "len", "rep"}
    assert keys | {"student", "evaluation", "job"} == set(rows[0])
    assert rows[0]["checkpoint"] == "default" and rows[1]["checkpoint"] == "/w/checkpoints/job-1/step-3"
    assert {k: rows[2][k] for k in keys - {"acc_ci", "fmt_ci"}} == {
        "label": "SERT",
        "checkpoint": "/w/checkpoints/job-1/step-3",
        "dataset": "sqa",
        "split": "test",
        "n": 10,
        "acc": 0.6,
        "fmt": 0.9,
        "len": 12.5,
        "rep": 0.25,
    }
    assert rows[2]["acc_ci"] == pytest.approx(list(wilson_interval(6, 10)))

    assert main(["--db", str(db_path), "report", "runs"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("student"))
    assert header.split() == ["student", "dataset", "split", "SERT", "zero-shot"]
    line = next(line for line in out.splitlines() if line.startswith("default"))
    assert line.split() == ["default", "sqa", "test", "60.0", "[31.3,", "83.2]", "50.0", "[23.7,", "76.3]"]
    assert "Fmt %" in out and "12.5" in out


def test_report_runs_on_an_empty_workspace(db_path, capsys):
    from sert_tui.cli import main

    assert main(["--db", str(db_path), "report", "runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--db", str(db_path), "report", "runs"]) == 0
    assert "no evaluations yet" in capsys.readouterr().out
