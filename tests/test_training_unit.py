"""Training sets, formats, masking, batching, the loss and in-process resume of the SFT engine."""

from __future__ import annotations

import copy

import pytest
from sqlmodel import select

from db.models import Job, Path
from db.paths_repo import set_decision, write_question_paths
from db.queries import split_questions
from db.session import session_scope
from engine import prompts
from engine.config import TrainConfig
from engine.jobs import create_job
from engine.training import datasets as ds
from engine.training.trainer import (
    IGNORE_INDEX,
    Encoded,
    SFTEngine,
    collate,
    encode_samples,
    epoch_batches,
    labels_for,
    split_micro,
    token_loss_sum,
)
from tests.test_app_helpers import make_filter_job


# -- formats ------------------------------------------------------------------------------------------------
def test_prompt_text_adds_a_period_only_when_the_question_has_no_end_punctuation():
    assert prompts.training_prompt("Is water wet?") == "Question: Is water wet? Answer:"
    assert prompts.training_prompt("Pick one:  (A) x\n(B) y") == "Question: Pick one: (A) x (B) y. Answer:"


def test_answer_surface_per_type():
    assert ds.answer_surface("yes", "yes_no") == "yes"
    assert ds.answer_surface("no", "yes_no") == "no"
    assert ds.answer_surface("c", "choice") == "C"
    assert ds.answer_surface("42", "number") == "42"
    assert ds.answer_surface("ab", "string") == "ab"


def test_completions_follow_the_paper_formats():
    assert ds.sert_completion(" Water is\n a liquid.", "yes") == " Water is a liquid. So the answer is yes."
    assert (
        ds.distill_completion("Cats are mammals.", "no")
        == " Let's think step by step. Cats are mammals. So the answer is no."
    )
    assert ds.finetune_completion("B") == " So the answer is B."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 1 is not greater than 5.\nTherefore, the answer is no.", "1 is not greater than 5."),
        ("Pears float, so the answer is no.", "Pears float."),
        ("Pears float, thus the answer is no", "Pears float."),
        ("Thus, the answer is yes", ""),
        (" \n\nA pear is denser than water, so it will sink.", "A pear is denser than water, so it will sink."),
        # only the final sentence: an answer stated mid-reasoning is reasoning
        ("The answer is no. Pears float.", "The answer is no. Pears float."),
        ("Pears float? The answer is no.\nSo the answer is no", "Pears float? The answer is no."),
        # a clause other than a connective leads in: the whole sentence goes
        ("Pears float. If we mean sink, then the answer is no.", "Pears float."),
        ("It weighs 2.5 kg. The answer is 2.5 kg.", "It weighs 2.5 kg."),
    ],
)
def test_strip_stated_answer(text, expected):
    assert ds.strip_stated_answer(text) == expected


# -- the training sets --------------------------------------------------------------------------------------
def _sample_job_with_paths(engine, dataset):
    """Four paths on the first train question: selected, selected+rejected, unselected+accepted,
    unselected+ignored; plus a selected+ignored path on the second question."""
    with session_scope(engine) as s:
        q1, q2 = split_questions(s, dataset.id, "train", 2)
    job = create_job(engine, "sample", {}, dataset_id=dataset.id)
    with session_scope(engine) as s:
        write_question_paths(
            s,
            job.id,
            q1.id,
            [
                {"branch": 0, "sample": 0, "text": " kept by the rules", "selected": True},
                {"branch": 0, "sample": 1, "text": " rejected by a person", "selected": True},
                {"branch": 1, "sample": 0, "text": " accepted by a person", "selected": False},
                {"branch": 1, "sample": 1, "text": " ignored, not selected", "selected": False},
            ],
        )
        write_question_paths(
            s, job.id, q2.id, [{"branch": 0, "sample": 0, "text": " ignored but selected", "selected": True}]
        )
        paths = {p.text: p.id for p in s.exec(select(Path).where(Path.job_id == job.id)).all()}
        set_decision(s, paths[" rejected by a person"], "rejected")
        set_decision(s, paths[" accepted by a person"], "accepted")
        set_decision(s, paths[" ignored, not selected"], "ignored")
        set_decision(s, paths[" ignored but selected"], "ignored")
    return job, q1, q2, make_filter_job(engine, dataset.id, job.id)


def test_sert_set_is_selected_unless_rejected_plus_accepted(engine, sqa):
    job, q1, q2, filt = _sample_job_with_paths(engine, sqa)
    with session_scope(engine) as s:
        samples = ds.sert_samples(s, s.get(Job, job.id), sqa, filt)
    texts = [smp.completion.split(" So the answer is")[0].strip() for smp in samples]
    assert sorted(texts) == sorted(["kept by the rules", "accepted by a person", "ignored but selected"])
    first = next(smp for smp in samples if smp.question_id == q1.id)
    assert first.prompt == prompts.training_prompt(q1.text)
    assert first.completion.endswith(f"So the answer is {q1.answer}.")


def test_sert_set_follows_a_later_decision(engine, sqa):
    job, _q1, _q2, filt = _sample_job_with_paths(engine, sqa)
    with session_scope(engine) as s:
        kept = s.exec(select(Path).where(Path.text == " kept by the rules")).one()
        set_decision(s, kept.id, "rejected")
    with session_scope(engine) as s:
        texts = {smp.completion for smp in ds.sert_samples(s, s.get(Job, job.id), sqa, filt)}
    assert not any("kept by the rules" in t for t in texts)


def test_distill_set_keeps_correct_rationales_of_the_chosen_questions(engine, sqa):
    with session_scope(engine) as s:
        qs = split_questions(s, sqa.id, "train", 3)
    job = create_job(engine, "teacher", {}, dataset_id=sqa.id)
    rows = [
        (qs[0], {"text": " Right reasoning. Therefore, the answer is yes.", "correct": True}),
        (qs[1], {"text": " Wrong reasoning.", "correct": False}),
        (qs[2], {"text": " Also right.", "correct": True}),
    ]
    with session_scope(engine) as s:
        for q, row in rows:
            write_question_paths(s, job.id, q.id, [{"source": "teacher", "branch": 0, "sample": 0, **row}])
    with session_scope(engine) as s:
        teacher = s.get(Job, job.id)
        correct = ds.distill_samples(s, teacher, sqa, "train", correct_only=True)
        everything = ds.distill_samples(s, teacher, sqa, "train", correct_only=False)
        limited = ds.distill_samples(s, teacher, sqa, "train", correct_only=True, question_ids={qs[0].id})
    assert [smp.question_id for smp in correct] == [qs[0].id, qs[2].id]
    assert len(everything) == 3
    assert [smp.question_id for smp in limited] == [qs[0].id]
    assert correct[0].completion == f" Let's think step by step. Right reasoning. So the answer is {qs[0].answer}."


def test_finetune_set_is_answers_only(engine, sqa):
    with session_scope(engine) as s:
        qs = split_questions(s, sqa.id, "train", 2)
    samples = ds.finetune_samples(qs, sqa)
    assert [smp.completion for smp in samples] == [f" So the answer is {q.answer}." for q in qs]


# -- tokenization and masking -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from engine.models import load_tokenizer

    return load_tokenizer("default")


def test_prompt_tokens_are_masked_and_eos_is_learned(tokenizer):
    sample = ds.Sample("Question: Is water wet? Answer:", " Yes it is. So the answer is yes.")
    (enc,), dropped = encode_samples(tokenizer, [sample], max_length=512)
    prompt_ids = tokenizer(sample.prompt)["input_ids"]
    assert dropped == 0
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids
    assert enc.input_ids[-1] == tokenizer.eos_token_id
    labels = labels_for(enc)
    assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert labels[len(prompt_ids) :] == enc.input_ids[len(prompt_ids) :]
    assert tokenizer.decode(enc.input_ids[len(prompt_ids) : -1]) == sample.completion


def test_truncation_cuts_the_completion_and_drops_samples_without_one(tokenizer):
    long = ds.Sample("Question: Is water wet? Answer:", " word" * 100)
    n_prompt = len(tokenizer(long.prompt)["input_ids"])
    encoded, dropped = encode_samples(tokenizer, [long, long], max_length=n_prompt + 3)
    assert dropped == 0 and all(len(e.input_ids) == n_prompt + 3 and e.n_labels == 3 for e in encoded)
    encoded, dropped = encode_samples(tokenizer, [long], max_length=n_prompt)
    assert encoded == [] and dropped == 1


def test_collate_pads_right_and_masks_padding():
    a, b = Encoded([5, 6, 7, 8], 2), Encoded([9, 10, 11], 1)
    ids, mask, labels = collate([a, b], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7, 8], [9, 10, 11, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 10, 11, -100]]
    _ids, no_mask, _labels = collate([a, a], pad_id=0, device="cpu")
    assert no_mask is None  # nothing padded: SDPA's causal fast path


# -- batching -----------------------------------------------------------------------------------------------
def test_epoch_batches_cover_every_sample_once_and_are_reproducible():
    lengths = [((i * 37) % 101) + 5 for i in range(203)]
    plan = epoch_batches(lengths, 8, seed=3, epoch=1)
    assert sorted(i for b in plan for i in b) == list(range(203))
    assert plan == epoch_batches(lengths, 8, seed=3, epoch=1)
    assert plan != epoch_batches(lengths, 8, seed=3, epoch=2)


def test_length_grouping_cuts_padding():
    lengths = [((i * 37) % 101) + 5 for i in range(400)]

    def padding(plan):
        return sum(max(lengths[i] for i in b) * len(b) for b in plan) / sum(lengths) - 1

    grouped = padding(epoch_batches(lengths, 8, 0, 0, group_by_length=True))
    plain = padding(epoch_batches(lengths, 8, 0, 0, group_by_length=False))
    assert grouped < 0.1 and plain > 3 * grouped


def test_split_micro():
    assert split_micro([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_micro([1, 2], 4) == [[1], [2]]


# -- the loss and the engine on a tiny model ----------------------------------------------------------------
def tiny_model(seed: int = 0):
    from tests.conftest import tiny_llama

    return tiny_llama(64, seed=seed, max_position_embeddings=64, tie_word_embeddings=True).eval()


def tiny_data(n: int = 12) -> list[Encoded]:
    import random

    rng = random.Random(1)
    out = []
    for _ in range(n):
        length = rng.randint(6, 20)
        out.append(Encoded([rng.randint(3, 63) for _ in range(length)], rng.randint(2, 4)))
    return out


def test_selective_loss_equals_the_full_logits_loss():
    import torch

    model = tiny_model()
    ids, mask, labels = collate(tiny_data(4), pad_id=0, device="cpu")
    fast = token_loss_sum(model, ids, mask, labels, selective=True)
    full = token_loss_sum(model, ids, mask, labels, selective=False)
    hf = model(input_ids=ids, attention_mask=mask, labels=labels).loss * (labels[:, 1:] != IGNORE_INDEX).sum()
    torch.testing.assert_close(fast, full)
    torch.testing.assert_close(fast, hf)


def test_prompt_tokens_get_no_gradient_through_the_labels():
    """Changing a prompt token's label position cannot change the loss: only completion tokens count."""
    import torch

    model = tiny_model()
    sample = Encoded([5, 6, 7, 8, 9, 10], 3)
    ids, mask, labels = collate([sample], 0, "cpu")
    assert (labels[0, :3] == IGNORE_INDEX).all()
    loss = token_loss_sum(model, ids, mask, labels)
    logits = model(input_ids=ids).logits[0, :-1]
    manual = torch.nn.functional.cross_entropy(logits[2:], ids[0, 3:], reduction="sum")
    torch.testing.assert_close(loss, manual)


def _engine(model, data, **kw):
    cfg = TrainConfig(batch_size=4, lr=1e-2, epochs=2.0, seed=5, bf16="off", **kw)
    return SFTEngine(model, data, cfg, device="cpu", pad_id=0)


def test_engine_counts_steps_and_learns():
    data = tiny_data(12)
    eng = _engine(tiny_model(), data)
    assert eng.steps_per_epoch == 3 and eng.total_steps == 6
    stats = [eng.step() for _ in range(eng.total_steps)]
    assert eng.done and [s.step for s in stats] == [1, 2, 3, 4, 5, 6]
    assert stats[-1].epoch == pytest.approx(2.0)
    assert stats[-1].loss < stats[0].loss
    assert all(s.tokens == sum(len(data[i].input_ids) for i in eng.batch_for(s.step - 1)) for s in stats)
    capped = _engine(tiny_model(), data, max_steps=4)
    assert capped.total_steps == 4


def test_a_ctrl_c_during_the_update_is_held_until_the_step_is_counted():
    """SIGINT while the optimizer updates the weights: the update, the step counter and the step's figures
    finish together, then the interrupt is raised, so the loop can save a step whose weights it counted."""
    import signal

    eng = _engine(tiny_model(), tiny_data(12))
    eng.step()
    real_step = eng.optimizer.step

    def interrupted_step(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # what a person's Ctrl-C delivers, in the middle of the update
        return real_step(*args, **kwargs)

    eng.optimizer.step = interrupted_step
    # Python's Ctrl-C handler, as in a terminal: a suite started in the background (``cmd &``) or in a test
    # runner's worker may have SIGINT ignored, and then no interrupt would come at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            eng.step()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert eng.global_step == 2 and not eng.updating
    assert eng.last_stats is not None and eng.last_stats.step == 2


def test_grad_accum_gives_the_same_step_as_one_batch():
    import torch

    data = tiny_data(8)
    one, two = _engine(tiny_model(), data), _engine(tiny_model(), data, grad_accum=2)
    a, b = one.step(), two.step()
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for p, q in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=5e-6)


def test_resumed_engine_ends_where_an_uninterrupted_one_does():
    import torch

    data = tiny_data(12)
    straight = _engine(tiny_model(), data)
    while not straight.done:
        straight.step()

    first = _engine(tiny_model(), data)
    for _ in range(2):
        first.step()
    weights, state = copy.deepcopy(first.model.state_dict()), copy.deepcopy(first.state_dict())
    torch.manual_seed(123)  # a new process starts with other RNG state
    model = tiny_model(seed=99)
    model.load_state_dict(weights)
    resumed = _engine(model, data)
    resumed.load_state_dict(state)
    assert resumed.global_step == 2
    while not resumed.done:
        resumed.step()
    assert resumed.global_step == straight.global_step == 6
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_linear_cross_entropy_equals_the_plain_loss_and_gradients(dtype) -> None:
    """engine.training.loss: the loss and the gradients of the hidden states and of the weight, chunk by chunk
    (here 3 chunks of 4, the last one short), against ``F.cross_entropy`` of the full logits."""
    import torch
    import torch.nn.functional as F

    from engine.training.loss import linear_cross_entropy_sum

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (10,), generator=gen)
    compute = getattr(torch, dtype)
    loss = linear_cross_entropy_sum(hidden, weight, targets, compute, chunk=4)
    (2.0 * loss).backward()
    got = (float(loss), hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    ref = F.cross_entropy((hidden.to(compute) @ weight.to(compute).t()).float(), targets, reduction="sum")
    (2.0 * ref).backward()
    tol = {"float32": 1e-5, "bfloat16": 2e-2}[dtype]
    assert got[0] == pytest.approx(float(ref), rel=tol)
    assert torch.allclose(got[1], hidden.grad, rtol=tol, atol=tol)
    assert torch.allclose(got[2], weight.grad, rtol=tol, atol=tol)
    assert got[1].dtype == hidden.dtype and got[2].dtype == weight.dtype
