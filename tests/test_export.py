"""``sert-tui export``: training sets and paths as prompt/completion records, checked against the training
engine's own sets, and read by TRL's SFTTrainer (tokenized exactly as our trainer tokenizes them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli_w
from sqlmodel import select

from db.models import Job, Question
from db.models import Path as PathRow
from db.paths_repo import set_decision
from db.session import session_scope
from engine.pipeline import run_stage
from sert_tui.cli import main
from tests.conftest import tiny_llama
from tests.test_stage_sample_filter import GOOD, insert_sample_job, make_config

CONFIG = {"data": {"dataset": "sqa", "train_limit": 2}}


@pytest.fixture
def filtered(engine, sqa, tmp_path):
    """A config file, and its sample and filter jobs: 2 questions x 4 paths, one selected each (branch 2)."""
    config = make_config()
    sample_id, _ = insert_sample_job(engine, sqa, config)
    [job] = run_stage(engine, config, "filter", lambda _line: None)
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(CONFIG))
    return {"config": path, "sample": sample_id, "filter": job.id}


def export(capsys, db_path, *args) -> tuple[int, dict | None, str]:
    code = main(["--db", str(db_path), "export", *map(str, args), "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_set_is_the_training_set_and_follows_decisions(engine, sqa, db_path, filtered, tmp_path, capsys):
    from engine.prompts import training_prompt
    from engine.training.datasets import answer_surface, sert_completion
    from engine.training.stage import sert_plan

    out = tmp_path / "sert.jsonl"
    code, result, _ = export(capsys, db_path, "set", filtered["config"], "--stage", "self-train", "--out", out)
    assert code == 0 and result == {"file": str(out), "records": 2, "format": "jsonl"}
    records = read_jsonl(out)
    assert [set(r) for r in records] == [{"prompt", "completion", "question_index", "path_id"}] * 2
    with session_scope(engine) as s:
        first = s.get(PathRow, records[0]["path_id"])
        question = s.get(Question, first.question_id)
    assert first.branch == 2 and records[0]["question_index"] == question.index
    assert records[0]["prompt"] == training_prompt(question.text)
    gold = answer_surface(question.answer, "yes_no")
    assert records[0]["completion"] == sert_completion(GOOD + " So yes.", gold)
    assert records[0]["completion"].endswith(f"So the answer is {gold}.")

    # a person rejects one selected path and accepts another: the exported set is what training would take
    with session_scope(engine) as s:
        set_decision(s, records[0]["path_id"], "rejected")
        accepted = next(
            p.id
            for p in s.exec(
                select(PathRow).where(
                    PathRow.job_id == filtered["sample"], PathRow.question_id == first.question_id, PathRow.branch == 1
                )
            )
        )
        set_decision(s, accepted, "accepted")
    code, _result, err = export(capsys, db_path, "set", filtered["config"], "--stage", "self-train", "--out", out)
    assert code == 2 and "already exists (use --force to overwrite)" in err
    code, result, _ = export(
        capsys, db_path, "set", filtered["config"], "--stage", "self-train", "--out", out, "--force"
    )
    assert code == 0 and result["records"] == 2
    again = read_jsonl(out)
    assert [r["path_id"] for r in again] == [accepted, records[1]["path_id"]]
    from engine.config import load_config

    config = load_config(filtered["config"])
    with session_scope(engine) as s:
        dataset = s.get(type(sqa), sqa.id)
    plan = sert_plan(engine, config, dataset)
    assert [(r["prompt"], r["completion"]) for r in again] == [(x.prompt, x.completion) for x in plan.samples]


def test_export_finetune_set_as_a_datasets_folder(engine, sqa, db_path, filtered, tmp_path, capsys):
    import datasets

    out = tmp_path / "finetune"
    code, result, _ = export(
        capsys, db_path, "set", filtered["config"], "--stage", "finetune", "--out", out, "--format", "dataset"
    )
    assert code == 0 and result["records"] == 2
    loaded = datasets.load_from_disk(str(out))
    assert loaded.column_names == ["prompt", "completion", "question_index"]
    assert all(c.startswith(" So the answer is ") for c in loaded["completion"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    code, _r, err = export(capsys, db_path, "set", filtered["config"], "--stage", "finetune", "--out", out)
    assert code == 2 and "already exists" in err
    code, _r, err = export(capsys, db_path, "set", filtered["config"], "--stage", "distill", "--out", tmp_path / "d")
    assert code == 2 and "no teacher rationales" in err and not (tmp_path / "d").exists()


def test_export_paths_by_decision(engine, db_path, filtered, tmp_path, capsys):
    out = tmp_path / "accepted.jsonl"
    code, result, _ = export(
        capsys, db_path, "paths", "--job", filtered["filter"], "--decision", "accepted", "--out", out
    )
    assert code == 0 and result["records"] == 0 and out.read_text() == ""
    with session_scope(engine) as s:
        job = s.get(Job, filtered["sample"])
        ids = [p.id for p in s.exec(select(PathRow).where(PathRow.job_id == job.id).order_by(PathRow.id))][:3]
        for pid in ids:
            set_decision(s, pid, "accepted")
    code, result, _ = export(
        capsys, db_path, "paths", "--job", filtered["sample"], "--decision", "accepted", "--out", out, "--force"
    )
    records = read_jsonl(out)
    assert code == 0 and result["records"] == 3 and [r["path_id"] for r in records] == ids
    assert all(r["decision"] == "accepted" and r["prompt"].startswith("Question: ") for r in records)
    assert {r["branch"] for r in records} == {0, 1, 2} and records[2]["selected"] is True


def test_trl_sft_trainer_reads_an_exported_set_as_our_trainer_does(engine, db_path, filtered, tmp_path, capsys):
    """TRL's SFTTrainer takes the JSONL as a prompt-completion dataset; its token ids equal ours (EOS
    included) and its labels mask exactly the prompt tokens our trainer masks; two TRL steps run."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from engine.models import load_tokenizer
    from engine.training.datasets import Sample
    from engine.training.trainer import encode_samples, labels_for

    out = tmp_path / "sert.jsonl"
    assert export(capsys, db_path, "set", filtered["config"], "--stage", "self-train", "--out", out)[0] == 0
    tokenizer = load_tokenizer("default")
    model = tiny_llama(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    train = datasets.load_dataset("json", data_files=str(out), split="train")
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    ours, dropped = encode_samples(tokenizer, [Sample(r["prompt"], r["completion"]) for r in read_jsonl(out)], 512)
    assert dropped == 0
    for theirs, mine in zip(trainer.train_dataset, ours, strict=True):
        assert theirs["input_ids"] == mine.input_ids
        assert theirs["labels"] == labels_for(mine)
    history = trainer.train()
    assert history.global_step == 2 and math.isfinite(history.training_loss)
