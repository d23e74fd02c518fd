"""Training stages inside ``accelerate launch``: every rank trains, rank 0 alone owns the workspace.

Protocol (all ranks run ``sert-tui --db W run CONFIG --stage X``; see :mod:`engine.training.accelerate_launch`):

- rank 0 runs the stage as a single process would (plan, fingerprint, find/resume/create the job). When it
  starts the training body it broadcasts ``("train", job_id, plan)``; when the stage is over (done, skipped
  or failed before training) it broadcasts ``("end",)``. Only rank 0 creates jobs and writes metrics,
  progress, logs, checkpoints and the summary.
- the other ranks create nothing: they wait for rank 0's messages and train the plan they receive.

The model goes through ``Accelerator.prepare`` (DDP, FSDP or DeepSpeed, as the accelerate config says; gloo
on a CPU-only machine), wrapped together with the loss so that every forward passes through the wrapper.
Each optimizer step takes the same global batch as a single process (``train.batch_size`` samples, the same
length-grouped schedule); rank ``r`` of ``w`` computes samples ``r::w`` of it. The loss of a step is the sum
of token cross-entropies over all ranks divided by the step's label-token count, so the gradient equals the
single-process one (DDP averages gradients over ranks, hence the factor ``w``). Cancellation is decided by
rank 0 and broadcast, so that all ranks stop at the same step and save the same checkpoint.

Resumption: every rank loads the checkpoint rank 0 registered (weights, optimizer, scheduler, step, RNG
states); under DDP the optimizer state is the same on every rank, and one that does not fit is an error.
FSDP/DeepSpeed shard it: their checkpoints hold the full weights (gathered), the step and the scheduler but
no optimizer state, and a resumed run restarts the optimizer moments and says so in the job log (written,
not executed here: no GPU on the development machine). Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from db.errors import UserError
from engine.jobs import JobCancelled, JobContext
from engine.training import checkpoints
from engine.training.trainer import MAX_GRAD_NORM, SFTEngine, StepStats, collate, split_micro, token_loss_sum

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from engine.config import ExperimentConfig
    from engine.training.plan import TrainingPlan

_STATE: dict[str, Any] = {}


def accelerator(device: str = "cpu") -> Any:
    """The process's one Accelerator (accelerate allows one configuration per process)."""
    if "acc" not in _STATE:
        from accelerate import Accelerator

        _STATE["acc"] = Accelerator(cpu=device == "cpu")
    return _STATE["acc"]


def broadcast(obj: Any = None) -> Any:
    """``obj`` of rank 0, on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _LossModule:
    """Built lazily (torch is imported only here): the model plus its loss, so DDP/FSDP see one forward."""

    @staticmethod
    def make(model: Any, selective: bool) -> Any:
        import torch

        class LossModule(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, labels):  # type: ignore[no-untyped-def]
                return token_loss_sum(self.model, input_ids, attention_mask, labels, selective)

        return LossModule()


class DistributedSFTEngine(SFTEngine):
    """:class:`SFTEngine` over ``world`` processes; same batches, same loss, same gradient as one process."""

    def __init__(self, model: Any, data: Any, cfg: Any, *, device: str, pad_id: int, acc: Any) -> None:
        from engine.training.trainer import make_optimizer

        super().__init__(model, data, cfg, device=device, pad_id=pad_id)
        self.acc = acc
        self.rank, self.world = acc.process_index, acc.num_processes
        # Prepare the model first (FSDP flattens parameters), then build optimizer and scheduler on it.
        self.wrapped = acc.prepare_model(_LossModule.make(model, self.selective))
        self.optimizer = acc.prepare_optimizer(make_optimizer(self.wrapped, cfg, device))
        self._warmup_fix(cfg)

    def _warmup_fix(self, cfg: Any) -> None:
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            "linear",
            self.optimizer.optimizer,
            num_warmup_steps=math.ceil(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )

    def unwrapped(self) -> Any:
        return self.acc.unwrap_model(self.wrapped).model

    def step(self) -> StepStats:
        import torch

        t0 = time.perf_counter()
        self.wrapped.train()
        batch = self.batch_for(self.global_step)
        label_tokens = sum(self.data[i].n_labels for i in batch)
        share, weight = batch[self.rank :: self.world], 1.0
        if not share:  # fewer samples than ranks: this rank still joins the gradient all-reduce, with weight 0
            share, weight = batch[:1], 0.0
        lr = float(self.scheduler.get_last_lr()[0])
        local = torch.zeros(3, dtype=torch.float64)  # loss sum, tokens, padded tokens
        parts = split_micro(share, self.cfg.grad_accum)
        for n, part in enumerate(parts):
            micro = [self.data[i] for i in part]
            ids, mask, labels = collate(micro, self.pad_id, str(self.acc.device))
            sync = contextlib.nullcontext() if n == len(parts) - 1 else self.acc.no_sync(self.wrapped)
            with sync:
                with torch.autocast(self._autocast_device, dtype=torch.bfloat16, enabled=self.bf16):
                    loss_sum = self.wrapped(ids, mask, labels)
                self.acc.backward(loss_sum * (weight * self.world / label_tokens))
            local[0] += float(loss_sum.detach()) * weight
            if weight:
                local[1] += sum(len(s.input_ids) for s in micro)
                local[2] += ids.numel()
        norm = self.acc.clip_grad_norm_(self.wrapped.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        total = self.acc.reduce(local.to(self.acc.device), reduction="sum").cpu()
        return StepStats(
            step=self.global_step,
            loss=float(total[0]) / label_tokens,
            lr=lr,
            grad_norm=float(norm) if norm is not None else float("nan"),
            tokens=int(total[1]),
            label_tokens=label_tokens,
            padded_tokens=int(total[2]),
            seconds=time.perf_counter() - t0,
            epoch=self.global_step / self.steps_per_epoch,
        )

    @property
    def sharded(self) -> bool:
        """Whether the optimizer state is split over the ranks (FSDP, DeepSpeed ZeRO)."""
        from accelerate.utils import DistributedType

        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def optimizer_state(self) -> dict[str, Any] | None:
        """DDP: the optimizer state, the same on every rank. FSDP/ZeRO: None -- each rank holds its own shard
        and rank 0's would be wrong on the others; a run resumed from it restarts the moments and says so."""
        return None if self.sharded else self.optimizer.optimizer.state_dict()

    def load_optimizer_state(self, saved: dict[str, Any] | None, log: Callable[[str], None]) -> None:
        """DDP: the saved moments, or an error when they do not fit. FSDP/ZeRO: the moments restart from zero
        (the job log says so)."""
        if saved is not None and self.sharded:
            log(
                f"optimizer state not restored: this run shards it ({self.acc.distributed_type.value}) and the "
                f"checkpoint holds one process's whole state; AdamW restarts from zero moments at step "
                f"{self.global_step}, the learning-rate schedule continues"
            )
            return
        if saved is None:
            super().load_optimizer_state(saved, log)
            return
        self.optimizer.optimizer.load_state_dict(saved)

    def model_for_saving(self) -> Any:
        """What rank 0 saves. DDP: the model itself. FSDP/DeepSpeed: the model with the gathered full state dict
        (a collective: every rank must call this)."""
        from accelerate.utils import DistributedType

        model = self.unwrapped()
        if self.acc.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return model
        full = self.acc.get_state_dict(self.wrapped)
        state = {k.removeprefix("model."): v for k, v in (full or {}).items()}
        return _WithStateDict(model, state)


class _WithStateDict:
    """``save_pretrained`` of ``model`` with a gathered state dict (sharded models)."""

    def __init__(self, model: Any, state: dict[str, Any]) -> None:
        self.model, self.state = model, state

    def save_pretrained(self, path: Any, **kwargs: Any) -> None:
        self.model.save_pretrained(path, state_dict=self.state, **kwargs)


def _cancel_requested(ctx: JobContext | None) -> bool:
    """Rank 0 asks the database; every rank gets its answer."""
    flag = False
    if ctx is not None:
        try:
            ctx.check_cancel()
        except JobCancelled:
            flag = True
    return bool(broadcast(flag))


def train(database: Engine, job_id: int, config: ExperimentConfig, plan: TrainingPlan, ctx: JobContext | None) -> dict:
    """The training loop of one rank; ``ctx`` is the job's context on rank 0 and None elsewhere."""
    from transformers.utils import logging as hf_logging

    from engine.cuda import maybe_compile
    from engine.models import resolve_device
    from engine.training.loop import fit, load_samples, load_start, resume_from

    hf_logging.disable_progress_bar()
    main = ctx is not None
    log: Callable[[str], None] = ctx.log if ctx is not None else (lambda _m: None)
    cfg = config.train
    acc = accelerator(resolve_device(config.student.device))
    if main:
        for note in plan.notes:
            log(note)
        checkpoints.clean_stray(database, job_id)
    resume = checkpoints.latest_resumable(database, job_id)
    resume = broadcast(resume.path if resume is not None else None)
    device = str(acc.device)
    model, tokenizer = load_start(plan, config, device, resume)
    data = load_samples(plan, config, tokenizer, log)
    sft = DistributedSFTEngine(model, data, cfg, device=device, pad_id=tokenizer.pad_token_id, acc=acc)
    maybe_compile(model, cfg.compile, device, sft.total_steps, log)  # CUDA only, where it pays
    if resume is not None:
        resume_from(sft, resume, log)
    log(
        f"{plan.kind} ({plan.label}): {len(data)} samples, {sft.total_steps} steps of {cfg.batch_size} over "
        f"{sft.world} processes ({acc.distributed_type.value}), {'LoRA' if cfg.lora else 'full fine-tuning'}, "
        f"device {device}, bf16 autocast {'on' if sft.bf16 else 'off'}"
    )
    summary = fit(
        sft,
        database=database,
        job_id=job_id,
        plan=plan,
        config=config,
        tokenizer=tokenizer,
        ctx=ctx,
        log=log,
        model_to_save=sft.model_for_saving,
        cancel_requested=lambda: _cancel_requested(ctx),
        writes=main,
        barrier=acc.wait_for_everyone,
        extra_meta={"processes": sft.world},
        extra_metrics={"processes": float(sft.world)},
        save_on_interrupt=False,
    )
    return {**summary, "processes": sft.world, "distributed_type": acc.distributed_type.value}


def main_train_body(database: Engine, job_id: int, config: ExperimentConfig, plan: TrainingPlan):
    """Rank 0's job body: tell the other ranks what to train, then train with them."""

    def body(ctx: JobContext) -> dict:
        broadcast(("train", job_id, plan))
        _STATE["training"] = True  # from here a failure ends the run (torchrun stops the other ranks)
        try:
            summary = train(database, job_id, config, plan, ctx)
        except JobCancelled:  # every rank stopped at the same step: the run ends in step
            _STATE["training"] = False
            raise
        _STATE["training"] = False
        return summary

    return body


def run_on_ranks(database: Engine, config: ExperimentConfig, run_main: Callable[[], list]):
    """Inside one process of ``accelerate launch``: rank 0 runs ``run_main`` (the stage, which owns the
    workspace); every other rank trains what rank 0 broadcasts and writes nothing."""
    from engine.models import resolve_device

    acc = accelerator(resolve_device(config.student.device))
    if acc.is_main_process:
        try:
            return run_main()
        finally:
            if not _STATE.get("training"):
                broadcast(("end",))
    while True:  # the other ranks: train what rank 0 says, write nothing
        message = broadcast()
        if message[0] == "end":
            return []
        _kind, job_id, plan = message
        try:
            train(database, job_id, config, plan, None)
        except JobCancelled:
            print(f"rank {acc.process_index}: job {job_id} cancelled", file=sys.stderr)
        except UserError as exc:  # rank 0 meets the same error and reports it: one `error:` line per run
            print(f"rank {acc.process_index}: stopped: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
