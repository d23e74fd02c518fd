"""``sert-tui data``: import, generate and list datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from sert_tui.cli.common import open_db, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="import, generate and list datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    imp = data_sub.add_parser("import", help="import a dataset")
    imp_sub = imp.add_subparsers(dest="format", metavar="FORMAT", required=True)

    rt = imp_sub.add_parser("reasoning-teacher", help="Fine-tune-CoT format: dataset JSON + split JSON")
    rt.add_argument("--name", required=True)
    rt.add_argument("--dataset", type=Path, required=True, help="dataset/<task>.json")
    rt.add_argument("--split", type=Path, required=True, help="split/<task>__default.json")
    rt.add_argument("--task", default=None, help="task name (default: the dataset file's stem)")
    rt.add_argument("--json", action="store_true")
    rt.set_defaults(func=cmd_import_reasoning_teacher)

    jl = imp_sub.add_parser("jsonl", help="JSON Lines: question, answer, optional choices and split")
    jl.add_argument("--name", required=True)
    jl.add_argument("--file", type=Path, required=True)
    _field_args(jl)
    jl.add_argument("--split-field", default="split")
    jl.set_defaults(func=cmd_import_jsonl)

    hf = imp_sub.add_parser("hf", help="a Hugging Face dataset id or a local dataset directory")
    hf.add_argument("--name", required=True)
    hf.add_argument("--path", required=True, help="hub id or local directory")
    hf.add_argument("--config", default=None, help="dataset configuration name")
    hf.add_argument("--split", action="append", dest="splits", help="split to import (repeatable; default all)")
    _field_args(hf)
    hf.set_defaults(func=cmd_import_hf)

    gen = data_sub.add_parser("generate", help="procedural data from reasoning-gym (offline)")
    gen.add_argument("task", help="reasoning-gym task, e.g. basic_arithmetic, coin_flip, leg_counting")
    gen.add_argument("--name", default=None, help="dataset name (default: the task name)")
    gen.add_argument("--train", type=int, default=200)
    gen.add_argument("--test", type=int, default=50)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_generate)

    ls = data_sub.add_parser("list", help="datasets in the workspace")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def _field_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question-field", default="question")
    parser.add_argument("--answer-field", default="answer")
    parser.add_argument("--choices-field", default="choices")
    parser.add_argument("--task", default="generic", help="task name stored with the dataset")
    parser.add_argument(
        "--answer-type",
        default=None,
        choices=["yes_no", "choice", "number", "string"],
        help="answer family (default: detected from the answers)",
    )
    parser.add_argument("--json", action="store_true")


def _save(args: argparse.Namespace, spec) -> int:
    from db.queries import save_dataset
    from db.session import session_scope

    engine = open_db(args)
    with session_scope(engine) as session:
        save_dataset(session, spec)
    counts = spec.counts()
    if getattr(args, "json", False):
        print_json({"name": spec.name, "task": spec.task, "answer_type": spec.answer_type, "splits": counts})
    else:
        split_text = ", ".join(f"{n} {split}" for split, n in counts.items())
        print(f"imported {spec.name!r} ({spec.task}, {spec.answer_type} answers): {split_text}")
    return 0


def cmd_import_reasoning_teacher(args: argparse.Namespace) -> int:
    from engine.data import reasoning_teacher

    return _save(args, reasoning_teacher.load(args.name, args.dataset, args.split, task=args.task))


def cmd_import_jsonl(args: argparse.Namespace) -> int:
    from engine.data import jsonl

    spec = jsonl.load(
        args.name,
        args.file,
        question_field=args.question_field,
        answer_field=args.answer_field,
        choices_field=args.choices_field,
        split_field=args.split_field,
        task=args.task,
        answer_type=args.answer_type,
    )
    return _save(args, spec)


def cmd_import_hf(args: argparse.Namespace) -> int:
    from engine.data import hf

    spec = hf.load(
        args.name,
        args.path,
        splits=args.splits,
        config=args.config,
        question_field=args.question_field,
        answer_field=args.answer_field,
        choices_field=args.choices_field,
        task=args.task,
        answer_type=args.answer_type,
    )
    return _save(args, spec)


def cmd_generate(args: argparse.Namespace) -> int:
    from engine.data import generate

    spec = generate.generate(args.name or args.task, args.task, args.train, args.test, args.seed)
    return _save(args, spec)


def cmd_list(args: argparse.Namespace) -> int:
    from db.queries import dataset_counts
    from db.session import session_scope

    with session_scope(open_db(args)) as session:
        rows = dataset_counts(session)
    if args.json:
        print_json([{k: r[k] for k in ("name", "task", "train", "test")} for r in rows])
    else:
        print_table(rows, ["name", "task", "answer_type", "source", "train", "test"])
    return 0
