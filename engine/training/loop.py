"""The training loop of a job, shared by one process (:mod:`engine.training.stage`) and every rank of
``accelerate launch`` (:mod:`engine.training.accelerate_engine`): the start model and its samples, resuming, then
steps with their metrics and progress, periodic checkpoints with pruning, a usable last checkpoint on
cancellation, the final checkpoint (LoRA merged) and the job summary.

What differs between the two callers is passed in: which model object is saved (a collective for sharded
models), how cancellation is decided (rank 0 asks the database and broadcasts), whether this process writes
(rank 0 only) and how processes wait for each other after a checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from db import vocabulary as vocab
from db.errors import UserError, first_line
from engine.jobs import JobCancelled, JobContext
from engine.training import checkpoints

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from engine.config import ExperimentConfig
    from engine.training.plan import TrainingPlan
    from engine.training.trainer import Encoded, SFTEngine

Log = Callable[[str], None]


def load_start(plan: TrainingPlan, config: ExperimentConfig, device: str, resume_path: str | None):
    """Model (fp32 master weights, LoRA-wrapped when configured) and tokenizer to train: the plan's start model,
    or the checkpoint at ``resume_path``."""
    import torch

    from engine.models import load_model, safetensors_only

    if resume_path is not None:
        checkpoints.load_state(resume_path, tensors=False)  # a bad state file is refused before any model loads
    torch.manual_seed(config.train.seed)
    if resume_path is not None and not config.train.lora:
        return load_model(resume_path, device=device, dtype="float32")
    model, tokenizer = load_model(plan.start_model, device=device, dtype="float32")
    if config.train.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume_path is not None:
            model = PeftModel.from_pretrained(
                model, str(safetensors_only(resume_path, adapter=True)), is_trainable=True
            )
        else:
            lora = LoraConfig(
                r=config.train.lora_r,
                lora_alpha=config.train.lora_alpha,
                lora_dropout=config.train.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
    return model, tokenizer


def load_samples(plan: TrainingPlan, config: ExperimentConfig, tokenizer: Any, log: Log) -> list[Encoded]:
    """The plan's samples as token ids, cut to ``train.max_length``; a clear error when none fits."""
    from engine.training.trainer import encode_samples

    max_length = config.train.max_length
    data, dropped = encode_samples(tokenizer, plan.samples, max_length)
    if dropped:
        log(f"{dropped} samples dropped: their prompt alone fills train.max_length = {max_length}")
    if not data:
        raise UserError("no training sample fits train.max_length")
    return data


def resume_from(sft: SFTEngine, path: str, log: Log) -> None:
    """Optimizer, scheduler, step and RNG states of the checkpoint at ``path`` into ``sft``, read without
    unpickling anything (:func:`checkpoints.load_state`); a :class:`UserError` naming the file when the state
    is not one sert-tui wrote or does not fit this job's model and optimizer."""
    state = checkpoints.load_state(path)
    try:
        sft.load_state_dict(state, log)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        file = checkpoints.state_file(path)
        raise UserError(f"{file}: does not fit this job's model and optimizer ({first_line(exc)})") from None
    log(f"resuming from checkpoint step {sft.global_step} ({path})")


def fit(
    sft: SFTEngine,
    *,
    database: Engine,
    job_id: int,
    plan: TrainingPlan,
    config: ExperimentConfig,
    tokenizer: Any,
    ctx: JobContext | None,
    log: Log,
    model_to_save: Callable[[], Any],
    cancel_requested: Callable[[], bool],
    writes: bool = True,
    barrier: Callable[[], None] = lambda: None,
    extra_meta: dict[str, Any] | None = None,
    extra_metrics: dict[str, float] | None = None,
    save_on_interrupt: bool = True,
) -> dict[str, Any]:
    """Train ``sft`` to its last step; returns the job summary. ``ctx``: where metrics and progress go (None on
    the ranks that do not write); ``cancel_requested`` is asked before every step, on every process.

    A cancelled run saves the steps done since the last checkpoint before it ends, and so does an interrupted
    one (Ctrl-C, SIGINT) with ``save_on_interrupt``: a Ctrl-C during the optimizer's update is held until the
    step is counted (:func:`engine.training.trainer.interrupts_held`), so weights and step counter agree.
    (Under ``accelerate launch`` saving is a collective that an interrupted rank cannot join, so it is off.)"""
    from engine.cuda import memory_metrics, reset_memory_peak

    reset_memory_peak(sft.device)
    cfg = config.train
    meta = {
        "job_id": job_id,
        "kind": plan.kind,
        "label": plan.label,
        "start_model": plan.start_model,
        "start": plan.start,
        "lora": cfg.lora,
        **(extra_meta or {}),
        "config": config.model_dump(mode="json"),
    }
    last_saved = sft.global_step

    def save(final: bool = False) -> None:
        nonlocal last_saved
        to_save = model_to_save()  # every process calls it: a collective for sharded models
        if final and cfg.lora and hasattr(to_save, "merge_and_unload"):
            to_save = to_save.merge_and_unload()
        state = None if final else sft.state_dict()
        if writes:
            row = checkpoints.write_checkpoint(
                database, job_id, sft.global_step, to_save, tokenizer, meta, state=state, is_final=final
            )
            pruned = checkpoints.prune(database, job_id, cfg.save_total_limit)
            log(f"checkpoint step {row.step}{' (final)' if final else ''}: {row.path}")
            if pruned:
                log(f"pruned checkpoints of steps {', '.join(map(str, pruned))}")
        barrier()
        last_saved = sft.global_step

    tokens, t0, last = 0, time.perf_counter(), None
    if ctx is not None:
        from engine.tracking import open_trackers

        ctx.track(open_trackers(database, config, job_id, plan.label))  # [log] report_to; closed with the job
        ctx.progress(sft.global_step, sft.total_steps, "steps", force=True)

    def record(step: Any) -> None:
        """The step's metric rows (idempotent: a step written again replaces its values) and progress line."""
        if ctx is None:
            return
        values = {
            vocab.METRIC_LOSS: step.loss,
            vocab.METRIC_LR: step.lr,
            vocab.METRIC_GRAD_NORM: step.grad_norm,
            vocab.METRIC_TOKENS_PER_S: step.tokens_per_s,
            vocab.METRIC_EPOCH: step.epoch,
            **(extra_metrics or {}),
            **memory_metrics(sft.device),
        }
        ctx.metrics(step.step, values)
        ctx.progress(
            step.step, sft.total_steps, "steps", extra=f"loss {step.loss:.4f}, {step.tokens_per_s:.0f} tokens/s"
        )

    while not sft.done:
        # A Ctrl-C anywhere in the iteration (the step, the cancel check, the metric write, a periodic save), not
        # only inside the step, saves the steps done: with a small model most of the time is spent outside it.
        try:
            if cancel_requested():
                if sft.global_step > last_saved:
                    save()
                raise JobCancelled(f"job {job_id} cancelled")
            last = sft.step()
            tokens += last.tokens
            record(last)
            if last.step % cfg.save_steps == 0 and not sft.done:
                save()
        except KeyboardInterrupt:
            if save_on_interrupt and not sft.updating and sft.global_step > last_saved:
                done = sft.last_stats  # the step counted last: its figures may not be written yet
                if done is not None and done.step == sft.global_step:
                    record(done)
                log(f"interrupted: saving the {sft.global_step - last_saved} steps done since the last checkpoint")
                save()
            raise
    save(final=True)
    elapsed = time.perf_counter() - t0
    final = checkpoints.final_checkpoint(database, job_id) if writes else None
    return {
        "label": plan.label,
        "samples": len(sft.data),
        "dropped": len(plan.samples) - len(sft.data),
        "steps": sft.total_steps,
        "start": plan.start,
        "start_model": plan.start_model,
        "final_checkpoint": final.path if final else None,
        "final_loss": last.loss if last is not None else None,
        "tokens_per_s": tokens / elapsed if elapsed > 0 and tokens else None,
        "bf16": sft.bf16,
        "lora": cfg.lora,
    }


def database_cancel(ctx: JobContext) -> Callable[[], bool]:
    """``cancel_requested`` of a single process: the job row's flag."""

    def requested() -> bool:
        try:
            ctx.check_cancel()
        except JobCancelled:
            return True
        return False

    return requested
