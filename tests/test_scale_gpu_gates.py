"""What runs on CPU of the GPU paths: vLLM's arguments (tensor parallelism), precision, compile and memory gates."""

from __future__ import annotations

import pytest

from engine.config import SamplingConfig, TrainConfig, config_from_dict
from engine.cuda import COMPILE_MIN_STEPS, maybe_compile, memory_metrics, reset_memory_peak, should_compile
from engine.sampling.vllm_backend import llm_kwargs


def test_vllm_llm_arguments_carry_tensor_parallelism() -> None:
    cfg = config_from_dict({"sampling": {"backend": "vllm", "tensor_parallel_size": 8, "seed": 3}}).sampling
    kwargs = llm_kwargs("/models/student", cfg)
    assert kwargs == {
        "model": "/models/student",
        "tensor_parallel_size": 8,
        "enable_prefix_caching": True,
        "seed": 3,
        "dtype": "auto",
        "max_logprobs": 21,  # 5 branch tokens + room for 16 special tokens ranked above them
    }
    assert llm_kwargs("m", SamplingConfig(dtype="bfloat16"))["dtype"] == "bfloat16"
    assert llm_kwargs("m", SamplingConfig())["tensor_parallel_size"] == 1


def test_tensor_parallel_size_is_validated_and_left_out_of_the_sample_fingerprint() -> None:
    from db.errors import UserError
    from engine.sampling.stage import THROUGHPUT_KEYS

    with pytest.raises(UserError, match="tensor_parallel_size"):
        config_from_dict({"sampling": {"tensor_parallel_size": 0}})
    assert "tensor_parallel_size" in THROUGHPUT_KEYS  # 1 GPU or 8: the same paths, the same job


def _hardware(monkeypatch, *, cuda: bool, cuda_bf16: bool, cpu_flags: str, cpu_fast_bf16: bool) -> None:
    """Pretend hardware for the precision decisions of the product code (``engine.precision``): CUDA (with or
    without bf16) and the CPU's measured GEMM rates, as they come out on a CPU with ``cpu_flags``."""
    import torch

    from engine import precision

    fast = cpu_fast_bf16 or any(f in cpu_flags for f in ("amx_bf16", "avx512_bf16"))
    rates = precision.Rates(float32=300.0, bfloat16=1200.0 if fast else 60.0)  # GFLOP/s as measured on such CPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(precision, "cpu_rates", lambda: rates)


@pytest.mark.parametrize(
    ("setting", "device", "cuda_bf16", "cpu_flags", "expected"),
    [
        ("auto", "cuda", True, "", True),  # A100/H100
        ("auto", "cuda:1", False, "", False),  # V100/T4: no fp16 training without loss scaling
        ("auto", "cpu", False, "amx_bf16 amx_tile", True),  # AMX
        ("auto", "cpu", False, "avx512f avx512_bf16", True),  # AVX512-BF16
        ("auto", "cpu", True, "avx512f", False),  # emulated bf16 is slower than fp32
        ("auto", "mps", True, "amx_bf16", False),
        ("on", "cpu", False, "", True),
        ("off", "cuda", True, "amx_bf16", False),
    ],
)
def test_training_bf16_autocast_choice(monkeypatch, setting, device, cuda_bf16, cpu_flags, expected) -> None:
    """``engine.training.trainer.use_bf16``: what the SFT engine runs (``SFTEngine.bf16``)."""
    from engine.training.trainer import use_bf16

    _hardware(monkeypatch, cuda=True, cuda_bf16=cuda_bf16, cpu_flags=cpu_flags, cpu_fast_bf16=False)
    assert use_bf16(setting, device) is expected


def test_training_on_cuda_needs_cuda(monkeypatch) -> None:
    from engine.training.trainer import use_bf16

    _hardware(monkeypatch, cuda=False, cuda_bf16=True, cpu_flags="", cpu_fast_bf16=False)
    assert use_bf16("auto", "cuda") is False


@pytest.mark.parametrize(
    ("requested", "student", "device", "cuda_bf16", "cpu_fast", "expected"),
    [
        ("auto", "auto", "cuda", True, False, "bfloat16"),
        ("auto", "auto", "cuda", False, False, "float16"),  # V100/T4
        ("auto", "auto", "cpu", False, False, "float32"),
        ("auto", "auto", "cpu", False, True, "bfloat16"),  # AMX / AVX512-BF16
        ("auto", "auto", "mps", True, True, "float32"),
        ("float32", "auto", "cuda", True, True, "float32"),  # an explicit sampling.dtype wins
        ("auto", "float32", "cuda", True, True, "float32"),  # then an explicit student.dtype
        ("bfloat16", "float32", "cpu", False, False, "bfloat16"),
    ],
)
def test_sampling_dtype_choice(monkeypatch, requested, student, device, cuda_bf16, cpu_fast, expected) -> None:
    """``engine.sampling.ops.choose_dtype``: what the sampler computes in."""
    import torch

    from engine.sampling.ops import choose_dtype

    _hardware(monkeypatch, cuda=True, cuda_bf16=cuda_bf16, cpu_flags="", cpu_fast_bf16=cpu_fast)
    assert choose_dtype(requested, device, student) is getattr(torch, expected)


def test_compile_only_on_cuda_and_only_where_it_pays() -> None:
    assert not should_compile("on", "cpu", 10_000)
    assert not should_compile("auto", "mps", 10_000)
    assert not should_compile("auto", "cuda", COMPILE_MIN_STEPS - 1)
    assert should_compile("auto", "cuda", COMPILE_MIN_STEPS)
    assert should_compile("on", "cuda:0", 1)
    assert not should_compile("off", "cuda", 10_000)
    assert not should_compile("on", "cuda", 10_000, compiler_available=False)
    assert TrainConfig().compile == "auto"


def test_gated_calls_do_nothing_on_cpu() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    )
    logs: list[str] = []
    assert maybe_compile(model, "on", "cpu", 10_000, logs.append) is False
    assert logs == []
    assert getattr(model.get_decoder(), "_compiled_call_impl", None) is None
    assert memory_metrics("cpu") == {}
    reset_memory_peak("cpu")  # nothing to reset off CUDA
    if not torch.cuda.is_available():
        assert memory_metrics("cuda") == {}
        reset_memory_peak("cuda")


def test_auto_measures_the_cpu() -> None:
    """The real probe: both rates measured on this CPU, and the decision and its reason follow them."""
    from engine import precision

    rates = precision.cpu_rates()
    assert rates.float32 > 0 and rates.bfloat16 > 0  # a CPU that emulates bf16 can measure under 1 GFLOP/s in it
    assert precision.auto_bf16("cpu") is (rates.bfloat16 >= precision.FAST_MARGIN * rates.float32)
    chosen = precision.inference_dtype_name("cpu")
    assert chosen == ("bfloat16" if rates.bf16_fast else "float32")
    assert f"{rates.bfloat16:.0f} GFLOP/s in bf16" in precision.describe("cpu", chosen)
