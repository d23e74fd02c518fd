"""The training state a checkpoint resumes from: written without pickle (tensors as safetensors, the rest as
JSON), read back exactly, never executing anything from the file; a resume that cannot restore a part of it
fails with an error naming the file or says in the job log what it dropped."""

from __future__ import annotations

import io
import json
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlmodel import select

from db.errors import UserError
from db.models import Checkpoint, Job, JobEvent, Metric
from db.session import session_scope
from engine.config import TrainConfig, load_config
from engine.jobs import create_job
from engine.training import checkpoints
from engine.training.loop import resume_from
from engine.training.trainer import SFTEngine
from sert_tui.cli import main
from tests.test_training_unit import tiny_data, tiny_model


def _engine(model, data, **kw):
    cfg = TrainConfig(batch_size=4, lr=1e-2, epochs=2.0, seed=5, bf16="off", **kw)
    return SFTEngine(model, data, cfg, device="cpu", pad_id=0)


def _assert_same(a, b) -> None:
    """Equal trees: same types (tuples stay tuples), tensors and arrays bit for bit."""
    import torch

    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b  # NaN
    else:
        assert a == b


class _Payload:
    """A pickle that creates ``marker`` when it is unpickled (what a hostile workspace would ship)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# -- the format -----------------------------------------------------------------------------------------------
def test_state_round_trips_exactly(tmp_path: Path) -> None:
    """Optimizer moments, scheduler, step and every RNG state (torch, numpy, Python) come back bit for bit."""
    np.random.seed(7)
    np.random.standard_normal()  # numpy's RNG now carries a cached gaussian, a float of its state
    random.seed(3)
    eng = _engine(tiny_model(), tiny_data(12))
    for _ in range(2):
        eng.step()
    state = eng.state_dict()
    assert isinstance(state["rng"]["python"], tuple) and isinstance(state["rng"]["numpy"][1], np.ndarray)
    checkpoints.save_state(state, tmp_path / checkpoints.STATE_FILE)
    loaded = checkpoints.load_state(tmp_path)
    _assert_same(state, loaded)

    odd = {"t": (1, 2.5, float("nan"), float("inf")), 3: [None, True, "x"], "$x": {"$tuple": 1}, "e": ()}
    checkpoints.save_state({"global_step": 0, **odd}, tmp_path / checkpoints.STATE_FILE)
    _assert_same({"global_step": 0, **odd}, checkpoints.load_state(tmp_path))

    with pytest.raises(TypeError, match="Path cannot be saved"):  # refused when saved, never dropped
        checkpoints.save_state({"global_step": 0, "p": tmp_path}, tmp_path / "x.safetensors")


def test_resumed_from_the_file_ends_where_an_uninterrupted_run_does(tmp_path: Path) -> None:
    import torch

    data = tiny_data(12)
    straight = _engine(tiny_model(), data)
    while not straight.done:
        straight.step()

    first = _engine(tiny_model(), data)
    for _ in range(2):
        first.step()
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    checkpoints.save_state(first.state_dict(), tmp_path / checkpoints.STATE_FILE)
    after_save = (random.random(), np.random.random(), torch.rand(1))
    torch.manual_seed(123)  # a new process starts with other RNG state
    random.seed(123)
    np.random.seed(123)
    model = tiny_model(seed=99)
    model.load_state_dict(weights)
    resumed = _engine(model, data)
    events: list[str] = []
    resume_from(resumed, str(tmp_path), events.append)
    assert (random.random(), np.random.random(), torch.rand(1)) == after_save  # every RNG continues
    assert resumed.global_step == 2 and events == [f"resuming from checkpoint step 2 ({tmp_path})"]
    while not resumed.done:
        resumed.step()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"global_step": 1, "a": {"$ndarray": "t0", "dtype": "|O", "shape": [1]}}, "malformed \\$ndarray"),
        ({"global_step": 1, "a": {"$code": "print(1)"}}, "unexpected entry '\\$code'"),
        ({"global_step": 1, "a": {"$tensor": "t9"}}, "missing tensor 't9'"),
        ({"steps": 1}, "no step count"),
    ],
)
def test_a_crafted_state_tree_is_refused(tmp_path: Path, tree: dict, message: str) -> None:
    import torch
    from safetensors.torch import save_file

    meta = {"format": checkpoints.STATE_FORMAT, "version": checkpoints.STATE_VERSION, "state": json.dumps(tree)}
    save_file({"t0": torch.zeros(8, dtype=torch.uint8)}, str(tmp_path / checkpoints.STATE_FILE), metadata=meta)
    with pytest.raises(UserError, match=message) as info:
        checkpoints.load_state(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / checkpoints.STATE_FILE}: not a training state")


# -- a hostile workspace ----------------------------------------------------------------------------------
@pytest.fixture
def resumable_finetune(engine, sqa, db_path: Path, tmp_path: Path):
    """A failed finetune job of a config, with a registered step-1 checkpoint holding a loadable model (a tiny
    one, with the bundled student's tokenizer) and no training state yet: (config file, job id, its folder)."""
    from engine.models import load_tokenizer
    from engine.training.stage import finetune_plan, train_fingerprint
    from tests.conftest import tiny_llama

    cfg = tmp_path / "ft.toml"
    cfg.write_text(
        '[student]\ndevice = "cpu"\n[data]\ndataset = "sqa"\ntrain_limit = 2\n'
        '[train]\nmax_steps = 2\nbatch_size = 1\nmax_length = 32\nbf16 = "off"\n'
    )
    config = load_config(cfg)
    plan = finetune_plan(engine, config, sqa)
    job = create_job(
        engine, "finetune", config.model_dump(mode="json"), fp=train_fingerprint(config, plan, sqa), dataset_id=sqa.id
    )
    folder = checkpoints.job_dir(engine, job.id) / "step-1"
    folder.mkdir()
    tokenizer = load_tokenizer("default")
    tokenizer.save_pretrained(folder)
    tiny_llama(len(tokenizer), layers=1).save_pretrained(folder)
    with session_scope(engine) as s:
        s.get(Job, job.id).status = "failed"
        s.add(Checkpoint(job_id=job.id, step=1, path=str(folder), is_final=False))
    return cfg, job.id, folder


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
@pytest.mark.parametrize("name", [checkpoints.STATE_FILE, checkpoints.LEGACY_STATE_FILE])
def test_a_pickled_state_file_is_refused_and_runs_nothing(
    resumable_finetune, engine, db_path: Path, tmp_path: Path, name: str, writer: str, capsys
) -> None:
    """A workspace from someone else with a pickle where the training state goes (under the current or the old
    file name; as ``torch.save`` writes it or a bare pickle): one error line naming the file, exit code 2, the
    pickle's code never runs, no step trains."""
    import torch

    cfg, job_id, folder = resumable_finetune
    marker = tmp_path / "pwned"
    state = {"global_step": 1, "x": _Payload(marker)}
    file = folder / name
    if writer == "torch.save":
        torch.save(state, file)
        torch.load(io.BytesIO(file.read_bytes()), weights_only=False)  # live: unpickling creates the marker
    else:
        file.write_bytes(pickle.dumps(state))
        pickle.loads(file.read_bytes())
    assert marker.is_file()
    marker.unlink()

    code = main(["--db", str(db_path), "run", str(cfg), "--stage", "finetune"])
    out = capsys.readouterr()
    assert not marker.exists()
    assert code == 2 and out.out == ""
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.err
    if name == checkpoints.LEGACY_STATE_FILE:
        assert errors[0].startswith(f"error: {folder / name}: a training state in the old pickle format")
    else:
        assert errors[0].startswith(f"error: {folder / name}: not a training state sert-tui can resume from (")
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and str(folder / name) in job.error
        assert s.exec(select(Metric).where(Metric.job_id == job_id)).first() is None
        assert [c.step for c in s.exec(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()] == [1]


# -- a resume never drops state silently ------------------------------------------------------------------------
def _saved_by_another_model(tmp_path: Path) -> Path:
    """A checkpoint folder whose state comes from a model with other parameters (one layer instead of two)."""
    from tests.conftest import tiny_llama

    other = _engine(tiny_llama(64, layers=1, max_position_embeddings=64, tie_word_embeddings=True), tiny_data(12))
    other.step()
    checkpoints.save_state(other.state_dict(), tmp_path / checkpoints.STATE_FILE)
    return tmp_path


def test_an_optimizer_state_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    folder = _saved_by_another_model(tmp_path)
    eng = _engine(tiny_model(), tiny_data(12))
    with pytest.raises(UserError, match="does not fit this job's model and optimizer") as info:
        resume_from(eng, str(folder), lambda _m: None)
    assert str(info.value).startswith(str(folder / checkpoints.STATE_FILE))


def _distributed(kind: str):
    """A :class:`DistributedSFTEngine` of one process under a stand-in accelerator of ``kind`` (DDP: the model
    and optimizer as they are; what matters here is only which distributed type accelerate reports)."""
    from accelerate.utils import DistributedType

    from engine.training.accelerate_engine import DistributedSFTEngine

    acc = SimpleNamespace(
        process_index=0,
        num_processes=1,
        distributed_type=DistributedType[kind],
        prepare_model=lambda m: m,
        prepare_optimizer=lambda o: SimpleNamespace(optimizer=o, state_dict=o.state_dict),
    )
    cfg = TrainConfig(batch_size=4, bf16="off")
    return DistributedSFTEngine(tiny_model(), tiny_data(12), cfg, device="cpu", pad_id=0, acc=acc)


def test_ddp_resume_with_an_optimizer_state_that_does_not_fit_fails(tmp_path: Path) -> None:
    folder = _saved_by_another_model(tmp_path)
    eng = _distributed("MULTI_CPU")
    with pytest.raises(UserError, match="does not fit this job's model and optimizer"):
        resume_from(eng, str(folder), lambda _m: None)


def test_sharded_resume_says_in_the_job_log_what_it_dropped(tmp_path: Path) -> None:
    """FSDP/ZeRO shard the optimizer: the checkpoint of a sharded run has none, and a sharded run does not load
    a whole one; both say so in the log, and the step and scheduler still come back."""
    source = _engine(tiny_model(), tiny_data(12))
    source.step()
    checkpoints.save_state(source.state_dict(), tmp_path / checkpoints.STATE_FILE)

    fsdp = _distributed("FSDP")
    assert fsdp.optimizer_state() is None
    events: list[str] = []
    resume_from(fsdp, str(tmp_path), events.append)
    assert fsdp.global_step == 1 and fsdp.scheduler.last_epoch == source.scheduler.last_epoch
    assert events[0].startswith("optimizer state not restored: this run shards it (FSDP)")
    assert "AdamW restarts from zero moments at step 1" in events[0]

    state = {**source.state_dict(), "optimizer": None}  # what a sharded run writes
    checkpoints.save_state(state, tmp_path / checkpoints.STATE_FILE)
    single, events = _engine(tiny_model(), tiny_data(12)), []
    resume_from(single, str(tmp_path), events.append)
    assert events[0].startswith("optimizer state not restored: the checkpoint has none (written by a sharded run)")
    assert single.global_step == 1 and len(events) == 2


def test_dropped_state_reaches_the_job_events(engine, tmp_path: Path) -> None:
    """The job log of a resume that drops the optimizer: a JobEvent row the app and `jobs` show."""
    from engine.jobs import JobContext

    source = _engine(tiny_model(), tiny_data(12))
    source.step()
    checkpoints.save_state({**source.state_dict(), "optimizer": None}, tmp_path / checkpoints.STATE_FILE)
    job = create_job(engine, "finetune", {})
    ctx = JobContext(engine, job.id)
    resume_from(_engine(tiny_model(), tiny_data(12)), str(tmp_path), ctx.log)
    with session_scope(engine) as s:
        messages = [e.message for e in s.exec(select(JobEvent).where(JobEvent.job_id == job.id)).all()]
    assert any(m.startswith("optimizer state not restored") for m in messages)
