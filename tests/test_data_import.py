"""Importers and generators through the real CLI entry point, on ../shared/data and files written here."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sert_tui.cli import main
from tests.conftest import ROOT, SHARED_DATA, rt_files

ALL_TASKS = {
    "strategy_qa": (1603, 687),
    "commonsense_qa": (9741, 1221),
    "coin_flip": (350, 150),
    "last_letter_concatenation": (350, 150),
    "multiarith": (420, 180),
    "single_eq": (356, 152),
    "addsub": (276, 119),
    "tracking_shuffled_objects": (525, 225),
}


def run_cli(db: Path, *args: str) -> int:
    return main(["--db", str(db), *args])


def data_list(db: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert run_cli(db, "data", "list", "--json") == 0
    return json.loads(capsys.readouterr().out)


def table_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def test_all_eight_reasoning_teacher_sets_import(db_path: Path, capsys) -> None:
    for task in ALL_TASKS:
        dataset, split = rt_files(task)
        assert (
            run_cli(
                db_path,
                "data",
                "import",
                "reasoning-teacher",
                "--name",
                task,
                "--dataset",
                str(dataset),
                "--split",
                str(split),
            )
            == 0
        )
    rows = {r["name"]: r for r in data_list(db_path, capsys)}
    assert {name: (r["train"], r["test"]) for name, r in rows.items()} == ALL_TASKS
    assert set(rows["strategy_qa"]) == {"name", "task", "train", "test"}


def test_imported_rows_keep_text_answer_choices_and_split_order(engine, sqa) -> None:
    from sqlmodel import select

    from db.models import Question
    from db.queries import split_questions
    from db.session import session_scope

    split = json.loads(rt_files("strategy_qa")[1].read_text())
    raw = json.loads(rt_files("strategy_qa")[0].read_text())
    with session_scope(engine) as s:
        first = split_questions(s, sqa.id, "train", limit=3)
        assert [q.index for q in first] == split["train"][:3]
        assert first[0].text == raw[split["train"][0]]["question"]
        assert first[0].answer == raw[split["train"][0]]["answer"].lower()
        assert "rationale" in first[0].meta
        assert s.exec(select(Question).where(Question.dataset_id == sqa.id)).all().__len__() == 2290


def test_commonsense_choices_are_parsed_from_the_question(db_path: Path) -> None:
    dataset, split = rt_files("commonsense_qa")
    assert (
        run_cli(
            db_path,
            "data",
            "import",
            "reasoning-teacher",
            "--name",
            "csqa",
            "--dataset",
            str(dataset),
            "--split",
            str(split),
        )
        == 0
    )
    con = sqlite3.connect(db_path)
    text, choices, answer = con.execute('SELECT text, choices, answer FROM questions WHERE "index" = 0').fetchone()
    assert json.loads(choices) == ["ignore", "enforce", "authoritarian", "yell at", "avoid"]
    assert answer == "A"
    meta = json.loads(con.execute("SELECT meta FROM datasets").fetchone()[0])
    assert meta["choice_letters"] == "ABCDE"


def test_jsonl_import_with_field_mapping_and_splits(db_path: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "q.jsonl"
    rows = [
        {"q": "Is water wet?", "a": "Yes", "split": "train"},
        {"q": "Is fire cold?", "a": "No", "split": "test"},
        {"q": "Is ice solid?", "a": "yes", "extra": 3},
    ]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert (
        run_cli(
            db_path,
            "data",
            "import",
            "jsonl",
            "--name",
            "mine",
            "--file",
            str(file),
            "--question-field",
            "q",
            "--answer-field",
            "a",
        )
        == 0
    )
    assert data_list(db_path, capsys) == [{"name": "mine", "task": "generic", "train": 2, "test": 1}]
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT answer_type FROM datasets").fetchone()[0] == "yes_no"
    assert json.loads(con.execute('SELECT meta FROM questions WHERE "index"=2').fetchone()[0]) == {"extra": 3}


def test_hf_import_from_save_to_disk_and_from_files(db_path: Path, tmp_path: Path, capsys) -> None:
    import datasets

    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"question": ["1+1?", "2+2?", "3+3?"], "answer": ["2", "4", "6"]}),
        test=datasets.Dataset.from_dict({"question": ["4+4?"], "answer": ["8"]}),
    )
    saved = tmp_path / "saved"
    dd.save_to_disk(str(saved))
    assert run_cli(db_path, "data", "import", "hf", "--name", "arith", "--path", str(saved)) == 0

    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text(json.dumps({"prompt": "Is it?", "label": "no"}) + "\n")
    assert (
        run_cli(
            db_path,
            "data",
            "import",
            "hf",
            "--name",
            "fromfiles",
            "--path",
            str(files),
            "--question-field",
            "prompt",
            "--answer-field",
            "label",
        )
        == 0
    )
    listed = {r["name"]: (r["train"], r["test"]) for r in data_list(db_path, capsys)}
    assert listed == {"arith": (3, 1), "fromfiles": (1, 0)}
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT answer_type FROM datasets WHERE name='arith'").fetchone()[0] == "number"


@pytest.mark.parametrize("task", ["coin_flip", "basic_arithmetic", "leg_counting"])
def test_generate_reasoning_gym(db_path: Path, capsys, task: str) -> None:
    assert run_cli(db_path, "data", "generate", task, "--name", task, "--train", "6", "--test", "3", "--seed", "7") == 0
    assert data_list(db_path, capsys) == [{"name": task, "task": task, "train": 6, "test": 3}]
    con = sqlite3.connect(db_path)
    texts = [r[0] for r in con.execute("SELECT text FROM questions ORDER BY id")]
    assert len(set(texts)) == len(texts) or task == "coin_flip"  # small generators may repeat a question


def test_generate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    from engine.data.generate import generate

    a = generate("a", "basic_arithmetic", 5, 2, seed=3)
    b = generate("b", "basic_arithmetic", 5, 2, seed=3)
    assert [r.text for r in a.records] == [r.text for r in b.records]


def _bad_jsonl(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (
            lambda t: [
                "reasoning-teacher",
                "--name",
                "x",
                "--dataset",
                str(t / "missing.json"),
                "--split",
                str(rt_files("strategy_qa")[1]),
            ],
            "missing.json: no such file",
        ),
        (
            lambda t: [
                "reasoning-teacher",
                "--name",
                "x",
                "--dataset",
                str(_write(t, "d.json", '[{"question": ')),
                "--split",
                str(rt_files("strategy_qa")[1]),
            ],
            "d.json: invalid JSON at line 1",
        ),
        (
            lambda t: [
                "reasoning-teacher",
                "--name",
                "x",
                "--dataset",
                str(_write(t, "d.json", json.dumps([{"question": "q", "answer": "yes"}, {"answer": "no"}]))),
                "--split",
                str(_write(t, "s.json", json.dumps({"train": [0, 1]}))),
                "--task",
                "strategy_qa",
            ],
            "d.json: row 1: missing field 'question'",
        ),
        (
            lambda t: [
                "reasoning-teacher",
                "--name",
                "x",
                "--dataset",
                str(rt_files("strategy_qa")[0]),
                "--split",
                str(_write(t, "s.json", json.dumps({"train": [0, 5000]}))),
            ],
            "s.json: train[1]: index 5000 does not exist",
        ),
        (
            lambda t: [
                "jsonl",
                "--name",
                "x",
                "--file",
                str(_bad_jsonl(t, '{"question": "q", "answer": "1"}\n')),
                "--question-field",
                "prompt",
            ],
            "bad.jsonl: line 1: missing field 'prompt'",
        ),
        (
            lambda t: [
                "jsonl",
                "--name",
                "x",
                "--file",
                str(_bad_jsonl(t, '{"question": "q", "answer": "1"}\n{oops\n')),
            ],
            "bad.jsonl: line 2: invalid JSON",
        ),
        (lambda t: ["hf", "--name", "x", "--path", str(t / "nowhere")], "nowhere"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_leaves_the_workspace_alone(
    db_path: Path, tmp_path: Path, capsys, make_args, expected: str
) -> None:
    dataset, split = rt_files("coin_flip")
    assert (
        run_cli(
            db_path,
            "data",
            "import",
            "reasoning-teacher",
            "--name",
            "before",
            "--dataset",
            str(dataset),
            "--split",
            str(split),
        )
        == 0
    )
    before = table_counts(db_path)
    capsys.readouterr()
    assert run_cli(db_path, "data", "import", *make_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert table_counts(db_path) == before


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_duplicate_dataset_name_is_refused(db_path: Path, capsys) -> None:
    dataset, split = rt_files("addsub")
    args = ["data", "import", "reasoning-teacher", "--name", "dup", "--dataset", str(dataset), "--split", str(split)]
    assert run_cli(db_path, *args) == 0
    before = table_counts(db_path)
    capsys.readouterr()
    assert run_cli(db_path, *args) == 2
    assert "a dataset named 'dup' already exists" in capsys.readouterr().err
    assert table_counts(db_path) == before


def test_real_command_exit_code_and_single_line(tmp_path: Path) -> None:
    """The installed console entry point, as a user runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sert_tui",
            "--db",
            str(tmp_path / "w.db"),
            "data",
            "import",
            "jsonl",
            "--name",
            "x",
            "--file",
            str(tmp_path / "absent.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent.jsonl'}: no such file"]


def test_shared_data_is_where_the_tests_expect_it() -> None:
    assert (SHARED_DATA / "dataset" / "strategy_qa.json").is_file()
