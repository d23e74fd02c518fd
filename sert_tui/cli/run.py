"""``sert-tui run CONFIG --stage NAME``: run a pipeline stage headless, printing progress to stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

from db.errors import UserError
from sert_tui.cli.common import error_text, open_db, print_json, stderr


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a stage of an experiment config headless")
    run.add_argument("config", type=Path, help="experiment config (TOML; see `sert-tui config init`)")
    run.add_argument(
        "--stage", required=True, help="sample | filter | self-train | teacher | distill | finetune | eval | all"
    )
    run.add_argument(
        "--json",
        action="store_true",
        help='print {"jobs": [{"id", "kind", "status"}]} (and "error" on failure) as one JSON document',
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
    line per job (none on failure: the error is the caller's one `error:` line on stderr)."""
    if args.json:
        print_json(result)
    elif result.get("error") is None:
        for job in result.get("jobs") or []:
            print(f"job {job['id']} {job['kind']}: {job['status']}")


def _report(args: argparse.Namespace, result: dict) -> None:
    """Where the result of this process goes: to the process that launched it (rank 0 under
    ``--launcher accelerate``), nowhere (the other ranks: rank 0 reports), or stdout."""
    from engine.ranks import is_main_process
    from engine.training.accelerate_launch import write_result

    if not is_main_process():
        return
    if not write_result(result):
        _print_result(args, result)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.pipeline import run_stage
    from sert_tui.cli.jobs import job_row

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
