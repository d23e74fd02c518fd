"""The supervised fine-tuning engine behind ``self-train``, ``distill`` and ``finetune``.

Why a small loop on torch + transformers + PEFT rather than TRL's ``SFTTrainer`` / ``transformers.Trainer``:
the workspace, not an output directory, owns the checkpoints (``step-<n>`` directories registered in the
database, pruned row and directory together), every optimizer step writes its metrics to the database,
cancellation is a database flag, and a resumed job must end with the same step count. Trainer's
``checkpoint-<n>`` rotation and resume logic are directory based and would fight the registered rows, and
accelerate keeps process-global state that refuses a second configuration in one process (``--stage all``
trains several models in one process). What the libraries do well is used as is: the models, the
schedulers (``transformers.get_scheduler``), LoRA (PEFT), AdamW (fused kernel where torch has one), autocast,
accelerate for multi-process runs (:mod:`engine.training.accelerate_engine`). TRL is where the sets go out:
``sert-tui export set`` writes them as prompt-completion datasets for TRL's ``SFTTrainer``, which tokenizes
and masks them exactly as :func:`encode_samples` does (``tests/test_export.py`` checks both).

What makes it fast (``benchmarks/training.py`` measures it against a plain padded fp32 loop):

- length-grouped batches: each epoch is shuffled, cut into mega-batches of 16 steps, sorted by length
  inside each, then the batches are shuffled again; samples are never concatenated, so no attention crosses
  samples, and a batch with no padding runs without a mask (SDPA's causal fast path);
- logits only where there is a label: the decoder's hidden states at completion positions go through the
  LM head, so prompt and padding positions never cost a vocabulary-sized matmul or softmax; the LM head and the
  loss run in chunks of labelled positions with their gradients (``engine/training/loss.py``), so no
  vocabulary-sized buffer is allocated (a fresh mmap, zero-filled page by page: system time) at every step;
- fused AdamW (``torch.optim.AdamW(fused=True)``, CPU and CUDA) instead of the per-tensor ``foreach`` path;
- bf16 autocast where bf16 is fast (CUDA with bf16; CPUs where a bf16 GEMM measurably beats fp32,
  :mod:`engine.precision`); on other CPUs bf16 matmuls are emulated and slower than fp32, so
  ``train.bf16 = "auto"`` leaves it off.

The loss of a step is the mean cross-entropy over the completion tokens of all samples of the step (the
prompt is masked, labels -100), whatever the grouping: micro-batches (``train.grad_accum``) sum their token
losses and divide by the step's label-token count.

Resumption: the batches of an epoch are a pure function of (seed, epoch), so a resumed run only needs the
step number, the optimizer, scheduler and RNG states (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.config import TrainConfig
from engine.models import selective_logits_supported  # noqa: F401  (re-exported)
from engine.training.datasets import Sample

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
MEGA_BATCH_STEPS = 16  # length grouping sorts inside windows of this many steps
MAX_GRAD_NORM = 1.0


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block ends, then deliver it: the optimizer's
    update, the step counter and the step's figures change together, so an interrupted run can always save the
    steps it counted (with a small model the update is a large share of a step, and an interrupt landed there
    often). Signals reach Python's main thread only; in another thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)  # through the handler that was there before


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_prompt: int  # the first n_prompt tokens are masked out of the loss

    @property
    def n_labels(self) -> int:
        return len(self.input_ids) - self.n_prompt


def encode_samples(
    tokenizer: PreTrainedTokenizerBase, samples: Sequence[Sample], max_length: int
) -> tuple[list[Encoded], int]:
    """Token ids of prompt + completion + EOS, truncated to ``max_length`` (the completion is cut, never
    the prompt); returns the encoded samples and how many were dropped because no completion token fit.

    Prompt and completion are tokenized separately so that the prompt's tokens are exactly those the
    evaluation feeds the model (``Question: {q}. Answer:``).
    """
    eos = tokenizer.eos_token_id
    prompts = tokenizer([s.prompt for s in samples], add_special_tokens=True)["input_ids"]
    completions = tokenizer([s.completion for s in samples], add_special_tokens=False)["input_ids"]
    out: list[Encoded] = []
    dropped = 0
    for p, c in zip(prompts, completions, strict=True):
        ids = list(p) + list(c) + ([eos] if eos is not None else [])
        ids = ids[:max_length]
        if len(ids) <= len(p):
            dropped += 1
            continue
        out.append(Encoded(ids, len(p)))
    return out, dropped


def labels_for(sample: Encoded) -> list[int]:
    return [IGNORE_INDEX] * sample.n_prompt + sample.input_ids[sample.n_prompt :]


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True
) -> list[list[int]]:
    """The batches (sample indices) of one epoch: a pure function of its arguments."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * MEGA_BATCH_STEPS
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def split_micro(batch: list[int], parts: int) -> list[list[int]]:
    """Split a step's batch into at most ``parts`` micro-batches of consecutive (similar-length) samples."""
    parts = max(1, min(parts, len(batch)))
    size = math.ceil(len(batch) / parts)
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def use_bf16(setting: str, device: str) -> bool:
    if setting == "on":
        return True
    if setting == "off":
        return False
    from engine.precision import auto_bf16

    return auto_bf16(device)


def collate(
    samples: Sequence[Encoded], pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` (None when nothing is padded) and ``labels``."""
    import torch

    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(labels_for(s))
        mask[row, :n] = 1
    attention = None if bool(mask.all()) else mask.to(device)
    return ids.to(device), attention, labels.to(device)


def token_loss_sum(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    selective: bool = True,
) -> torch.Tensor:
    """Sum of the next-token cross-entropies over the labelled positions (fp32 softmax)."""
    import torch.nn.functional as F

    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if selective:
        import torch

        from engine.training.loss import linear_cross_entropy_sum

        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is None:  # the LM head and the loss in chunks (engine/training/loss.py)
            dtype = (
                torch.get_autocast_dtype(input_ids.device.type)
                if torch.is_autocast_enabled(input_ids.device.type)
                else None
            )
            return linear_cross_entropy_sum(hidden.last_hidden_state[:, :-1][keep], head.weight, targets[keep], dtype)
        logits = head(hidden.last_hidden_state[:, :-1][keep])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1][keep]
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def make_optimizer(model: Any, cfg: TrainConfig, device: str) -> torch.optim.Optimizer:
    """AdamW (fused kernel on CPU/CUDA); no weight decay on biases and norm weights (as transformers does)."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = device.split(":")[0] in ("cpu", "cuda")
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr)


@dataclass
class StepStats:
    step: int  # optimizer steps done after this one (1-based)
    loss: float
    lr: float
    grad_norm: float
    tokens: int  # non-padding tokens processed
    label_tokens: int
    padded_tokens: int  # tokens including padding
    seconds: float
    epoch: float
    #: where the step's seconds went: forward (decoder, LM head and loss), backward, optimizer (clipping, AdamW,
    #: schedule), other (batching, collation, bookkeeping)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class SFTEngine:
    """Trains ``model`` on encoded samples one optimizer step at a time; no database, no files.

    The stage (``engine.training.stage``) wraps it with metrics, checkpoints and cancellation; the benchmark
    drives it directly.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        data: Sequence[Encoded],
        cfg: TrainConfig,
        *,
        device: str,
        pad_id: int,
        group_by_length: bool = True,
        selective: bool | None = None,
    ):
        import torch
        from transformers import get_scheduler

        if not data:
            raise ValueError("no training samples")
        self.model = model
        self.data = list(data)
        self.cfg = cfg
        self.device = device
        self.pad_id = pad_id
        self.group_by_length = group_by_length
        self.selective = selective_logits_supported(model) if selective is None else selective
        self.bf16 = use_bf16(cfg.bf16, device)
        self.lengths = [len(s.input_ids) for s in self.data]
        self.steps_per_epoch = math.ceil(len(self.data) / cfg.batch_size)
        total = math.ceil(cfg.epochs * self.steps_per_epoch)
        self.total_steps = max(1, min(total, cfg.max_steps) if cfg.max_steps else total)
        self.global_step = 0
        self.optimizer = make_optimizer(model, cfg, device)
        self.scheduler = get_scheduler(
            "linear",
            self.optimizer,
            num_warmup_steps=math.ceil(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self._plans: dict[int, list[list[int]]] = {}
        self.updating = False  # True while the optimizer changes the weights and the step is not counted yet
        self.last_stats: StepStats | None = None  # the figures of the newest counted step
        self._autocast_device = device.split(":")[0]
        self._torch = torch

    # -- schedule -----------------------------------------------------------------------------------------
    def batch_for(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch not in self._plans:
            self._plans = {
                epoch: epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch, self.group_by_length)
            }
        return self._plans[epoch][index]

    @property
    def done(self) -> bool:
        return self.global_step >= self.total_steps

    # -- one optimizer step -------------------------------------------------------------------------------
    def step(self) -> StepStats:
        torch = self._torch
        t0 = time.perf_counter()
        self.model.train()
        batch = self.batch_for(self.global_step)
        samples = [self.data[i] for i in batch]
        label_tokens = sum(s.n_labels for s in samples)
        lr = float(self.scheduler.get_last_lr()[0])
        loss_total = 0.0
        padded = 0
        forward = backward = 0.0
        for part in split_micro(batch, self.cfg.grad_accum):
            micro = [self.data[i] for i in part]
            ids, mask, labels = collate(micro, self.pad_id, self.device)
            padded += ids.numel()
            t1 = time.perf_counter()
            with torch.autocast(self._autocast_device, dtype=torch.bfloat16, enabled=self.bf16):
                loss_sum = token_loss_sum(self.model, ids, mask, labels, self.selective)
            t2 = time.perf_counter()
            (loss_sum / label_tokens).backward()
            loss_total += float(loss_sum.detach())
            t3 = time.perf_counter()
            forward, backward = forward + t2 - t1, backward + t3 - t2
        t4 = time.perf_counter()
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM))
        with interrupts_held():  # the update, the counter and ``last_stats`` move together
            self.updating = True
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            self.updating = False
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
            optimizer = time.perf_counter() - t4
            self.last_stats = StepStats(
                step=self.global_step,
                loss=loss_total / label_tokens,
                lr=lr,
                grad_norm=grad_norm,
                tokens=sum(len(s.input_ids) for s in samples),
                label_tokens=label_tokens,
                padded_tokens=padded,
                seconds=total,
                epoch=self.global_step / self.steps_per_epoch,
                phases={
                    "forward": forward,
                    "backward": backward,
                    "optimizer": optimizer,
                    "other": max(0.0, total - forward - backward - optimizer),
                },
            )
        return self.last_stats

    # -- resumable state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step, optimizer, scheduler and RNG states (torch, CUDA, numpy, Python ``random``): what a resumed run
        needs to continue exactly (:func:`engine.training.checkpoints.save_state` writes it without pickle)."""
        import numpy as np

        torch = self._torch
        return {
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "optimizer": self.optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }

    def optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer's state to save (None: it cannot be saved whole, see the distributed engine)."""
        return self.optimizer.state_dict()

    def load_optimizer_state(self, saved: dict[str, Any] | None, log: Callable[[str], None]) -> None:
        """Restore the optimizer; raises when ``saved`` does not fit it, logs it when there is none to restore."""
        if saved is None:
            log(
                "optimizer state not restored: the checkpoint has none (written by a sharded run); AdamW restarts "
                f"from zero moments at step {self.global_step}, the learning-rate schedule continues"
            )
            return
        self.optimizer.load_state_dict(saved)

    def load_state_dict(self, state: dict[str, Any], log: Callable[[str], None] = lambda _m: None) -> None:
        """Restore :meth:`state_dict`. Raises (KeyError, ValueError, TypeError) when a part does not fit this
        engine; whatever is not restored is said through ``log``, never dropped silently."""
        import numpy as np

        torch = self._torch
        self.global_step = int(state["global_step"])
        self.load_optimizer_state(state["optimizer"], log)
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state.get("rng") or {}
        if rng.get("python") is not None:
            random.setstate(rng["python"])
        if rng.get("numpy") is not None:
            np.random.set_state(rng["numpy"])
        if rng.get("torch") is not None:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        elif rng.get("cuda") is not None:
            log("CUDA random state of the checkpoint not restored: this run has no CUDA device")
