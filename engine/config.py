"""The experiment config: a TOML file validated by typed models; the defaults are the paper's values except
where a CPU needs smaller ones (``PAPER`` lists the paper's, ``PRESETS`` the two presets of ``config init``:
``cpu`` trains 3 epochs at lr 1e-4, what the sweep of docs/results.md found for the bundled student, where the paper
trains 20 at 3e-4; ``paper`` is the paper's values throughout). Without a preset a key takes its default: 1
epoch at 3e-4.

A file may give only some keys; the rest take their defaults. Unknown keys and wrong types are refused with one line
naming the key's path (``sampling.top_k: ...``). Types are strict: ``top_k = "10"``, ``lora = 1`` or ``min_tokens =
25.0`` is an error, not silently converted (an integer is taken where a float is expected).
``render_default_config`` writes the commented file of ``sert-tui config init [--preset paper|cpu]``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db.errors import UserError, brief, plain


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class StudentConfig(Section):
    model: str = Field(
        "default",
        description='"default" (bundled SmolLM2-135M-Instruct, dequantised from a Q4_1 GGUF), a hub id or a local path',
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16")


class DataConfig(Section):
    dataset: str = Field("", description="name of a dataset in the workspace (sert-tui data list)")
    split: str = Field("train", description="split that sampling, teacher and training read")
    train_limit: int | None = Field(None, ge=1, description="first N questions of the training split (all if unset)")
    test_limit: int | None = Field(None, ge=1, description="first N questions of the evaluation split (all if unset)")
    shard: str | None = Field(
        None, pattern=r"^\d+/[1-9]\d*$", description='"i/n": sample only every n-th question from the i-th (0-based)'
    )

    def shard_of(self) -> tuple[int, int] | None:
        """``(i, n)`` of ``shard``, or None when the run is not sharded."""
        if self.shard is None:
            return None
        i, n = (int(x) for x in self.shard.split("/"))
        if i >= n:
            raise UserError(f"data.shard: shard index {i} must be below the shard count {n}")
        return i, n


class SamplingConfig(Section):
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="auto (vLLM on a GPU if installed) | hf | vllm")
    first_tokens: int = Field(5, ge=1, description="top-k first tokens, one branch each (paper: 5)")
    per_branch: int = Field(5, ge=1, description="sampled continuations per branch (paper: 5)")
    top_k: int = Field(10, ge=1, description="top-k of the continuation sampler (paper: 10)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus top-p (paper: 0.95)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (paper: 1.0)")
    max_new_tokens: int = Field(128, ge=1, description="new tokens per path, the first-token branch included")
    seed: int = Field(0, description="random seed; a fixed seed reproduces the paths")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="sequences decoded together (questions x paths); unset: measured (hf: the fastest decode step "
        "among the sizes that fit in memory)",
    )
    max_batch_memory_mb: float | None = Field(
        None, gt=0, description="cap on a decode batch's KV cache in MiB; above it the batch halves (as on OOM)"
    )
    dtype: str = Field("auto", description="auto (bf16 where the hardware does it well) | float32 | bfloat16")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs per model)")
    batch_invariant: bool = Field(
        False,
        description=(
            "a question's paths exactly independent of the other questions, batch size and shard: each question "
            "decoded alone at a fixed shape, float32 (unless dtype is set), fixed threads; hf backend; slower"
        ),
    )


class FiltersConfig(Section):
    min_tokens: int = Field(25, ge=0, description="drop paths shorter than this many student tokens (paper: 25)")
    max_rep2: float = Field(0.20, ge=0, le=1, description="drop paths whose bigram repetition rep-2 is above this")
    min_perplexity: float = Field(5.0, ge=0, description="drop fluent-but-trivial paths with perplexity below this")
    require_correct: bool = Field(False, description="extra, not in the paper: drop paths whose answer is wrong")
    min_confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="extra, not in the paper: drop paths whose answer confidence (CoT-decoding) is below this; 0 = off",
    )
    select: Literal["rep2", "confidence", "random", "gold_likelihood", "curated"] = Field(
        "rep2",
        description=(
            "one path per question among the survivors: rep2 = the lowest bigram repetition (the paper); "
            "confidence = the highest answer confidence Δ (CoT-decoding, Wang & Zhou 2024); random = a seeded "
            "uniform pick (the control every selection claim is compared against; filters.seed); "
            "gold_likelihood = the highest log p(' So the answer is {gold}.' | training prompt + path) under the "
            "student (LaTRO's self-reward, arXiv 2411.04282; scores the survivors once, stored per path); "
            "curated = the path a person chose on the review screen where there is one (none where they marked no "
            "path good enough), the lowest rep-2 elsewhere"
        ),
    )
    seed: int = Field(
        0,
        description="seed of select = random: the pick of a question is a pure function of (seed, question id)",
    )
    use_choices: bool = Field(
        True,
        description="the review screen's choices (a chosen path, or none good enough) override the selection in the "
        "training set; study sets it false for every select but curated, so rep2 and random are measured without them",
    )


class TrainConfig(Section):
    epochs: float = Field(1.0, gt=0, description="passes over the training set (paper: 20 on a GPU)")
    max_steps: int | None = Field(None, ge=1, description="optional cap on optimizer steps")
    batch_size: int = Field(8, ge=1, description="samples per optimizer step (paper: 8)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (paper: 3e-4)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lora: bool = Field(False, description="train LoRA adapters (PEFT) instead of all weights")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(512, ge=16, description="truncate samples to this many tokens")
    bf16: Literal["auto", "on", "off"] = Field("auto", description="bf16 autocast (auto: where supported)")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the decoder: CUDA only; auto = from 200 steps, where it pays"
    )
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (and at the end)")
    save_total_limit: int = Field(2, ge=1, description="keep only the newest N intermediate checkpoints")
    seed: int = Field(0)
    distill_from: Literal["self-train", "base"] = Field(
        "self-train", description="distillation start: the self-trained checkpoint (SERT+RD) or the base (RD)"
    )


class TeacherConfig(Section):
    base_url: str = Field("", description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (empty: none)")
    model: str = Field("", description="teacher model name at that endpoint")
    api: Literal["chat", "completions"] = Field("chat", description="chat or completions API")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable holding the key (may be unset for a 127.0.0.1 server)"
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, ge=1)
    samples: int = Field(1, ge=1, description="rationales per question (diverse reasoning)")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_attempts: int = Field(5, ge=1, description="attempts per request before the question is marked failed")
    require_correct: bool = Field(True, description="keep a rationale only when the teacher's answer is correct")
    price_input_per_m: float = Field(0.0, ge=0, description="price per 1M prompt tokens, for the cost estimate")
    price_output_per_m: float = Field(0.0, ge=0, description="price per 1M completion tokens")
    retry_base_delay: float = Field(1.0, ge=0, description="first back-off in seconds (doubles per attempt, jittered)")
    retry_max_delay: float = Field(30.0, ge=0, description="longest back-off in seconds (Retry-After may ask more)")


class JudgeConfig(Section):
    enabled: bool = Field(False, description="score reasoning detail of evaluation outputs with a judge model")
    base_url: str = Field("")
    model: str = Field("")
    api: Literal["chat", "completions"] = Field("chat", description="chat or completions API")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, ge=1)
    concurrency: int = Field(4, ge=1)
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1, description="attempts per request before the output is left unscored")
    retry_base_delay: float = Field(1.0, ge=0)
    retry_max_delay: float = Field(30.0, ge=0)
    limit: int | None = Field(None, ge=1, description="judge only the first N outputs")


class EvalConfig(Section):
    split: str = Field("test", description="split to evaluate on")
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(
        256,
        ge=1,
        description="questions decoded at once (fewer where their KV cache would not fit in memory); the engine "
        "ran 200 StrategyQA test questions 1.42x faster with 200 rows than with 64",
    )
    decoder: Literal["engine", "generate"] = Field(
        "engine",
        description='"engine": greedy on the continuous-batching decoder of sampling; "generate": model.generate',
    )
    baselines: bool = Field(True, description="with --stage all: also zero-shot, Finetune and RD baselines")
    job: int | None = Field(
        None, ge=1, description="evaluate only this training job's model: its final checkpoint, else its newest"
    )
    checkpoint: str = Field("", description="evaluate only this checkpoint directory of the workspace (step-N)")


class LogConfig(Section):
    report_to: list[Literal["tensorboard", "trackio"]] = Field(
        default_factory=list,
        description='also send training metrics (loss, lr, tok/s, grad norm) and eval Acc/Fmt to "tensorboard" (event '
        'files in <workspace dir>/tb/<job id>-<label>/) and/or "trackio" (the trackio extra); not part of any '
        "job's fingerprint",
    )


class ExperimentConfig(Section):
    name: str = Field("experiment", description="a label for the jobs of this config")
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)


def _error_line(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    # a TOML key may be any string (a newline, a megabyte): quote the odd ones so the message stays one line
    key = ".".join(plain(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    else:
        message = err["msg"]
        if "input" in err and not isinstance(err["input"], dict):
            message += f" (got {brief(err['input'])})"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {message}{suffix}"


def config_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_error_line(source, exc)) from None


def load_config(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return config_from_dict(data, str(path))


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


#: The SERT paper's values (arXiv 2502.12744; DESIGN.md section 1) of the keys it fixes, as "section.key".
PAPER: dict[str, Any] = {
    "sampling.first_tokens": 5,
    "sampling.per_branch": 5,
    "sampling.top_k": 10,
    "sampling.top_p": 0.95,
    "sampling.temperature": 1.0,
    "filters.min_tokens": 25,
    "filters.max_rep2": 0.20,
    "filters.min_perplexity": 5.0,
    "filters.require_correct": False,
    "train.epochs": 20.0,
    "train.batch_size": 8,
    "train.lr": 3e-4,
    "teacher.require_correct": True,
}

#: The presets of ``sert-tui config init``: the values each sets where they are not the defaults.
#: ``cpu`` is the best full fine-tuning recipe of the sweep in docs/results.md ("Training recipe", benchmarks/sweep.py:
#: epochs 1 and 3 x lr 3e-5, 1e-4 and 3e-4 on StrategyQA and coin_flip); the key defaults stay 1 epoch at 3e-4,
#: so that a config that names no training keys (the tests, the default loop) stays short.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"train.epochs": 3.0, "train.lr": 1e-4},
    "paper": dict(PAPER),
}
PRESET_NOTES = {
    "cpu": (
        "the bundled student on a CPU: 3 epochs at lr 1e-4, the best recipe of the sweep in docs/results.md "
        "(benchmarks/sweep.py); the other values are the paper's except the keys marked below"
    ),
    "paper": "the paper's values (batch 8, AdamW lr 3e-4, 20 epochs; on a CPU that takes many hours)",
}
DEFAULT_PRESET = "cpu"


def preset_config(preset: str = DEFAULT_PRESET) -> ExperimentConfig:
    """The config of a preset: the defaults with the preset's values set."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} ({' | '.join(PRESETS)})")
    data: dict[str, dict[str, Any]] = {}
    for dotted, value in PRESETS[preset].items():
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    return config_from_dict(data, f"preset {preset}")


def differences_from_paper(config: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (value, the paper's value)}`` for every key where ``config`` is not the paper's."""
    out = {}
    for dotted, paper in PAPER.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value != paper:
            out[dotted] = (value, paper)
    return out


def render_default_config(preset: str = DEFAULT_PRESET) -> str:
    """The commented config file of ``sert-tui config init --preset PRESET``."""
    config = preset_config(preset)
    differs = differences_from_paper(config)
    lines = [
        f'# sert-tui experiment config, preset "{preset}": {PRESET_NOTES[preset]}.',
        "# Every key is optional; the values shown are this preset's. Keys shown commented out are unset.",
    ]
    if differs:
        lines.append(
            "# Differs from the SERT paper (arXiv 2502.12744): "
            + ", ".join(f"{k} = {_toml_value(v)} (paper: {_toml_value(p)})" for k, (v, p) in differs.items())
            + "; `sert-tui config init --preset paper` writes the paper's values."
        )
    else:
        lines.append("# Every value the SERT paper (arXiv 2502.12744) fixes is the paper's.")
    lines.append("")
    for name, field in ExperimentConfig.model_fields.items():
        value = getattr(config, name)
        if not isinstance(value, Section):
            if field.description:
                lines.append(f"# {field.description}")
            lines.append(f"{name} = {_toml_value(value)}")
            lines.append("")
            continue
        lines.append(f"[{name}]")
        for key, sub in type(value).model_fields.items():
            current = getattr(value, key)
            comment = f"  # {sub.description}" if sub.description else ""
            if f"{name}.{key}" in differs:
                paper = differs[f"{name}.{key}"][1]
                comment += f" -- differs from the paper ({_toml_value(paper)}) in preset {preset}"
            if current is None:
                lines.append(f"# {key} = ...{comment}")
            else:
                lines.append(f"{key} = {_toml_value(current)}{comment}")
        lines.append("")
    return "\n".join(lines)


def toml_value(raw: str) -> Any:
    """A value given on a command line as a TOML literal (``3``, ``0.5``, ``true``, ``"text"``, ``[1, 2]``);
    anything that is not one is the text itself (a bare word is a string). ``--set`` options read values so."""
    text = raw.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
