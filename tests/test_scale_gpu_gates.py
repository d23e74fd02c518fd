"""What runs on CPU of the GPU paths: vLLM's arguments (tensor parallelism), precision, compile and memory gates."""

from __future__ import annotations

import pytest

from engine.config import SamplingConfig, TrainConfig, config_from_dict
from engine.cuda import (
    COMPILE_MIN_STEPS,
    inference_dtype,
    maybe_compile,
    memory_metrics,
    reset_memory_peak,
    should_compile,
    train_precision,
)
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
    from engine.errors import UserError
    from engine.stages.sample import THROUGHPUT_KEYS

    with pytest.raises(UserError, match="tensor_parallel_size"):
        config_from_dict({"sampling": {"tensor_parallel_size": 0}})
    assert "tensor_parallel_size" in THROUGHPUT_KEYS  # 1 GPU or 8: the same paths, the same job


@pytest.mark.parametrize(
    ("setting", "device", "cuda_bf16", "cpu_bf16", "expected"),
    [
        ("auto", "cuda", True, False, "bf16"),  # A100/H100
        ("auto", "cuda:1", False, False, "fp32"),  # V100/T4: no fp16 training without loss scaling
        ("auto", "cpu", False, True, "bf16"),  # AMX / AVX512-BF16
        ("auto", "cpu", False, False, "fp32"),  # emulated bf16 is slower than fp32
        ("auto", "mps", True, True, "fp32"),
        ("on", "cpu", False, False, "bf16"),
        ("off", "cuda", True, True, "fp32"),
    ],
)
def test_train_precision(setting: str, device: str, cuda_bf16: bool, cpu_bf16: bool, expected: str) -> None:
    assert train_precision(setting, device, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16) == expected


def test_train_precision_agrees_with_the_trainer_on_this_machine() -> None:
    from engine.sampling.ops import cpu_has_fast_bf16
    from engine.training.trainer import bf16_native, use_bf16

    for setting in ("auto", "on", "off"):
        expected = train_precision(setting, "cpu", cuda_bf16=False, cpu_bf16=bf16_native("cpu")) == "bf16"
        assert use_bf16(setting, "cpu") == expected
    assert isinstance(cpu_has_fast_bf16(), bool)


@pytest.mark.parametrize(
    ("requested", "device", "cuda_bf16", "expected"),
    [
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda", False, "float16"),
        ("auto", "cpu", False, "float32"),
        ("float32", "cuda", True, "float32"),
    ],
)
def test_inference_dtype(requested: str, device: str, cuda_bf16: bool, expected: str) -> None:
    assert inference_dtype(requested, device, cuda_bf16=cuda_bf16, cpu_bf16=False) == expected


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
