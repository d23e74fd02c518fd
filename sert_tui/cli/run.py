"""``sert-tui run CONFIG --stage NAME``: run a pipeline stage headless, printing progress to stderr.

``--stage self-train --rounds N``: N rounds of self-training, each sampled with and trained from the model of the
round before, each evaluated (engine.pipeline.rounds). ``run --default``: the embedded default loop, the same
one the app's ``d`` starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from db.errors import UserError
from sert_tui.cli.common import error_text, open_db, print_json, stderr


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a stage of an experiment config headless")
    run.add_argument(
        "config", type=Path, nargs="?", default=None, help="experiment config (TOML; see `sert-tui config init`)"
    )
    run.add_argument(
        "--stage", default=None, help="sample | filter | self-train | teacher | distill | finetune | eval | all"
    )
    run.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="with --stage self-train: N rounds of sample -> filter -> self-train -> eval, round r sampling with "
        'and training from the model of round r-1 (labels "SERT", "SERT r2", ...); resumes at the round it was in',
    )
    run.add_argument(
        "--default",
        action="store_true",
        help="the embedded default (the app's d), no CONFIG: the bundled student on a generated dataset, "
        "sample -> filter -> self-train -> eval beside zero-shot, from <workspace>.default.toml",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help='print {"jobs": [{"id", "kind", "status"}]} (and "error" on failure) as one JSON document; '
        'with --rounds or --default also "rounds" (each round\'s jobs, checkpoint and accuracy) and "zero_shot"; '
        'with --default also "outcome" (what was trained, SERT - zero-shot paired, what it means, what next)',
    )
    run.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="sample only shard I of N (0-based) of the questions; merge shards with `workspace merge`",
    )
    scale = run.add_argument_group("scale-out (training stages)")
    scale.add_argument(
        "--launcher",
        choices=("none", "accelerate"),
        default="none",
        help="accelerate: re-run the stage under `accelerate launch` (DDP by default, FSDP/DeepSpeed presets)",
    )
    scale.add_argument("--num-processes", type=int, default=1, help="processes over all machines (one per GPU)")
    scale.add_argument(
        "--accelerate-config",
        default=None,
        metavar="PRESET|FILE",
        help="ddp (default) | fsdp | deepspeed_zero2 | deepspeed_zero3 | an accelerate config file",
    )
    scale.add_argument("--num-machines", type=int, default=1)
    scale.add_argument("--machine-rank", type=int, default=0)
    scale.add_argument("--main-process-ip", default=None)
    scale.add_argument("--main-process-port", type=int, default=None)
    run.set_defaults(func=cmd_run)


def _launch(args: argparse.Namespace) -> int:
    """``--launcher accelerate``: the processes' output goes to stderr; rank 0's result is printed here, once."""
    from engine.training.accelerate_launch import LaunchOptions, launch
    from sert_tui.cli.common import workspace_path

    opts = LaunchOptions(
        num_processes=args.num_processes,
        accelerate_config=args.accelerate_config,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        main_process_ip=args.main_process_ip,
        main_process_port=args.main_process_port,
    )
    open_db(args).dispose()  # create/migrate the workspace once, before the processes start
    launched = launch(workspace_path(args), args.config, args.stage, opts)
    result = launched.result
    if result is None and opts.machine_rank != 0:  # rank 0 runs on machine 0 and reports there
        stderr(f"machine {opts.machine_rank}: accelerate launch ended with status {launched.returncode}")
        result = {"jobs": []}
    elif result is None:
        raise UserError(f"accelerate launch ended with status {launched.returncode} before rank 0 reported a result")
    jobs = result.get("jobs") or []
    _print_result(args, result)
    if result.get("error") is not None:
        return 2  # rank 0 printed its `error:` line (on stderr, which the processes share with this one)
    completed = all(j.get("status") == "completed" for j in jobs)
    return 0 if completed and launched.returncode == 0 else 1


def _rows_of(engine, job_ids: list[int]) -> list[dict]:
    from db.models import Job
    from db.session import session_scope
    from sert_tui.cli.jobs import job_row

    try:
        with session_scope(engine) as s:
            rows = [s.get(Job, job_id) for job_id in dict.fromkeys(job_ids)]
            return [job_row(j) for j in rows if j is not None]
    except Exception:  # the workspace itself is what failed: the error says so
        return []


def _print_result(args: argparse.Namespace, result: dict) -> None:
    """``{"jobs": [...]}`` (and ``"error"`` when the run failed) as one JSON document with ``--json``, else a
    line per job and per round (none on failure: the error is the caller's one `error:` line on stderr)."""
    if args.json:
        print_json(result)
    elif result.get("error") is None:
        from engine.evaluation.stats import fmt_interval

        for job in result.get("jobs") or []:
            print(f"job {job['id']} {job['kind']}: {job['status']}")
        accuracies = [(r["label"], r["accuracy"]) for r in result.get("rounds") or []]
        if result.get("zero_shot"):
            accuracies.insert(0, ("zero-shot", result["zero_shot"]["accuracy"]))
        for label, acc in accuracies:
            if acc is not None:
                print(f"{label}: Acc % {fmt_interval(acc['acc'], acc['acc_ci'])} (n={acc['n']})")
        for line in result.get("outcome") or []:
            print(line)


def _report(args: argparse.Namespace, result: dict) -> None:
    """Where the result of this process goes: to the process that launched it (rank 0 under
    ``--launcher accelerate``), nowhere (the other ranks: rank 0 reports), or stdout."""
    from engine.ranks import is_main_process
    from engine.training.accelerate_launch import write_result

    if not is_main_process():
        return
    if not write_result(result):
        _print_result(args, result)


def _check_mode(args: argparse.Namespace) -> None:
    """The combinations of CONFIG, --stage, --rounds and --default that mean something; one error line otherwise."""
    from db.vocabulary import SELF_TRAIN

    if args.default:
        if args.config is not None:
            raise UserError("run --default takes no CONFIG: it runs the default config beside the workspace")
        if args.stage is not None:
            raise UserError("run --default takes no --stage: it runs sample, filter, self-train and eval")
        if args.shard is not None or args.launcher != "none":
            raise UserError("run --default runs in this process, unsharded: drop --shard and --launcher")
    else:
        if args.config is None:
            raise UserError("run: give a CONFIG (or --default for the embedded default)")
        if args.stage is None:
            raise UserError("run: --stage is required (or --default for the embedded default)")
    if args.rounds is not None:
        if not args.default and args.stage != SELF_TRAIN:
            raise UserError(f"--rounds: only with --stage {SELF_TRAIN} (or --default), not --stage {args.stage}")
        if args.rounds < 1:
            raise UserError(f"--rounds: {args.rounds} is not a number of rounds (1 or more)")
        if args.shard is not None or args.launcher != "none":
            raise UserError("--rounds runs in this process, unsharded: drop --shard and --launcher")


def _run_loop(args: argparse.Namespace) -> int:
    """``--rounds N`` or ``--default``: the rounds' jobs, and with --json one document with their accuracies."""
    from engine.config import load_config
    from engine.jobs import RUN_HISTORY
    from engine.pipeline.rounds import loop_document, run_default, run_rounds
    from sert_tui.cli.common import workspace_path
    from sert_tui.cli.jobs import job_row

    config = None if args.default else load_config(args.config)
    engine = open_db(args)
    mark = len(RUN_HISTORY)
    try:
        _path: Path | None = None
        if args.default:
            _path, loop = run_default(engine, workspace_path(args), stderr, rounds=args.rounds or 1)
        else:
            assert config is not None
            loop = run_rounds(engine, config, args.rounds, stderr)
    except (Exception, KeyboardInterrupt) as exc:
        _report(args, {"jobs": _rows_of(engine, RUN_HISTORY[mark:]), "error": error_text(exc)})
        raise
    document = {"jobs": [job_row(j) for j in loop.jobs], **loop_document(engine, loop)}
    if args.default and loop.completed:
        from engine.pipeline.rounds import outcome_lines

        assert _path is not None
        document["outcome"] = outcome_lines(engine, load_config(_path).data.dataset)
    _report(args, document)
    return 0 if loop.completed else 1


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.pipeline import run_stage
    from sert_tui.cli.jobs import job_row

    _check_mode(args)
    if args.default or args.rounds is not None:
        return _run_loop(args)
    if getattr(args, "launcher", "none") == "accelerate":
        load_config(args.config)  # a bad config is refused before any process starts
        return _launch(args)
    config = load_config(args.config)
    if args.shard is not None:
        from engine.config import config_from_dict

        config = config_from_dict(
            {
                **config.model_dump(exclude_none=True),
                "data": {**config.data.model_dump(exclude_none=True), "shard": args.shard},
            },
            source="--shard",
        )
    engine = open_db(args)
    from engine.jobs import RUN_HISTORY
    from engine.ranks import is_distributed

    mark = len(RUN_HISTORY)
    try:
        if is_distributed():  # one process of `accelerate launch`
            from db.vocabulary import TRAINING_KINDS
            from engine.pipeline import run_stage_distributed

            if args.stage not in TRAINING_KINDS:
                raise UserError(f"stage {args.stage!r} does not run under a multi-process launcher")
            jobs = run_stage_distributed(engine, config, args.stage, stderr)
        else:
            jobs = run_stage(engine, config, args.stage, stderr)
    except (Exception, KeyboardInterrupt) as exc:
        # A script still gets its one JSON document: the jobs this run touched, how they ended, the error.
        _report(args, {"jobs": _rows_of(engine, RUN_HISTORY[mark:]), "error": error_text(exc)})
        raise
    _report(args, {"jobs": [job_row(j) for j in jobs]})
    return 0 if all(j.status == "completed" for j in jobs) else 1
