"""A workspace checkpoint (or any local model / adapter folder) is read from safetensors only: a folder that
holds only pickle weights is refused with one ``error:`` line naming it, and ``torch.load`` is never called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.errors import UserError
from engine import models
from engine.training import checkpoints
from sert_tui.cli import main
from tests.conftest import tiny_llama


@pytest.fixture
def no_torch_load(monkeypatch):
    import torch

    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.load was called on a workspace folder")

    monkeypatch.setattr(torch, "load", refuse)


def pickle_model(folder: Path) -> Path:
    """A tiny model saved the old way: config.json + pytorch_model.bin."""
    import torch

    model = tiny_llama(64)
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_a_model_folder_with_only_pickle_weights_is_refused(tmp_path, no_torch_load) -> None:
    folder = pickle_model(tmp_path / "ckpt")
    message = f"{folder}: only pickle weights (pytorch_model.bin); sert-tui loads a local model from safetensors only"
    with pytest.raises(UserError) as raised:
        models.load_model(str(folder), device="cpu", dtype="float32")
    assert str(raised.value).startswith(message)
    with pytest.raises(UserError) as raised:
        checkpoints.load_trained(folder)  # a full checkpoint of a training job
    assert str(raised.value).startswith(message)


def test_the_command_says_it_in_one_error_line(tmp_path, capsys, no_torch_load) -> None:
    folder = pickle_model(tmp_path / "ckpt")
    code = main(["--db", str(tmp_path / "w.db"), "model", "prepare", str(folder), "--no-register"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"error: {folder}: only pickle weights (pytorch_model.bin); sert-tui loads a local model from safetensors "
        "only (save it with save_pretrained(..., safe_serialization=True))"
    ]


def test_an_adapter_with_only_pickle_weights_is_refused(tmp_path, no_torch_load) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / checkpoints.ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / "adapter_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(UserError) as raised:
        checkpoints.load_trained(folder)
    assert str(raised.value).startswith(
        f"{folder}: only pickle weights (adapter_model.bin); sert-tui loads a local adapter from safetensors only"
    )


def test_a_folder_with_both_is_read_from_its_safetensors(tmp_path, no_torch_load) -> None:
    import torch

    folder = tmp_path / "both"
    model = tiny_llama(49152)
    model.save_pretrained(folder)  # model.safetensors
    models.load_tokenizer("default").save_pretrained(folder)
    poisoned = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save(poisoned, folder / "pytorch_model.bin")
    loaded, _tokenizer = models.load_model(str(folder), device="cpu", dtype="float32")
    weight = loaded.model.embed_tokens.weight
    assert torch.equal(weight, model.model.embed_tokens.weight) and weight.abs().sum() > 0
