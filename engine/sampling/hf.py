"""The transformers backend: shared-prompt branching with continuous batching on a preallocated KV cache.

Per question: one prefill of the prompt (batch 1), the top-``first_tokens`` next tokens (special tokens and EOS left
out) become the branches, the prompt's keys/values are copied into ``first_tokens * per_branch`` rows of the shared
decode cache, and the rows join the running batch. Every decode step runs the model's own forward on one token per
active row (any decoder-only transformers model with a standard KV cache), samples top-k then top-p inside the k,
and records the token's log-probability and the margin p(top-1) - p(top-2) of the plain distribution (path
confidence) from those same logits. Finished rows (EOS or ``max_new_tokens``) leave the
batch at once -- the last rows move into their slots -- and new questions are admitted as soon as there is room for
all their rows. A question's paths are handed to ``on_done`` as soon as its last row finishes.

Randomness comes from one ``torch.Generator`` per question seeded from ``(seed, key)``, which draws one number
per path slot at each of that question's steps, whether or not the slot is still running: the random numbers do
not depend on what else is in the batch. The arithmetic does: a row's logits come out of matrix products whose
shape (the number of rows in the batch, the attention length of the longest row), kernel (bf16 kernels are chosen
by the number of rows; fp32 weights are packed for MKL only from a certain amount of work) and thread count (tuned
while sampling) depend on the other questions, so the same question can round differently in another run, and
where that moves a sampled token across a boundary of the inverse CDF the rest of the path differs. So by default
what holds by construction is the structure: the same questions get the same ``(branch, sample)`` keys,
``first_tokens * per_branch`` paths each, and the same random numbers; the texts agree only up to such flips,
which are not rare in bf16 (``benchmarks/shard_flips.py``; docs/scale-out.md gives the measured share). A rerun of the
very same batches (same items, batch size and a fixed ``threads``) reproduces the paths exactly.

``sampling.batch_invariant = true`` makes a question's paths a function of the question, the settings and the
machine alone (:meth:`HFSampler._sample_alone`): each question is decoded as its own batch of exactly
``first_tokens * per_branch`` rows in a cache sized by its own prompt, finished rows stay in place (fed their last
token, their outputs ignored) so the batch never changes shape and every row sits at the same position, the fused
weights are packed wherever packing is available (not by amount of work), the thread count is fixed for the whole
run (``threads``, else torch's: ``OMP_NUM_THREADS`` or the core count; fp32 results do depend on it), and the
dtype is float32 unless ``sampling.dtype`` says otherwise. Every product is then the same call on the same
operands whatever else the run samples, so shards, resumed runs and batch sizes give identical paths on the same
hardware and software with the same thread count (not across CPU kinds or torch versions, whose kernels round
differently). The price is throughput: no batching across questions, and finished rows keep being computed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.errors import first_line
from engine.models import eos_token_ids
from engine.sampling.cache import kv_cache_bytes, output_cache
from engine.sampling.decoders import PACK_MIN_WORK, make_decoder
from engine.sampling.ops import branch_tokens, plain_margins, question_generator, sample_step
from engine.sampling.paths import branch_excluded_ids
from engine.sampling.threads import ThreadTuner

if TYPE_CHECKING:
    import torch

    from engine.config import SamplingConfig
    from engine.sampling.paths import SampledPath


AUTO_MAX_ROWS = 512  # largest decode batch sampling.batch_size = unset considers (~2 GB of bf16 cache at 190 positions)
SAMPLING_OPS, PREFILL = "sert.sampling_ops", "sert.prefill"  # profiler regions of the decode loop
PROBE_MIN_WORK = 50_000  # sequence-steps from which measuring the batch size (~3 s) pays off
PROBE_STEPS = 2  # timed steps per size, the faster one counts: one step's time moved by 10-20% on a shared CPU


@dataclass
class _Question:
    key: int
    slot: int  # question slot in the token buffers
    generator: Any
    branch_tokens: list[int]
    remaining: int  # rows still decoding
    lengths: list[int] = field(default_factory=list)


class HFSampler:
    """Samples latent reasoning paths with a transformers model (CPU or one GPU)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        cfg: SamplingConfig,
        log: Callable[[str], None] | None = None,
        fused: bool | None = None,
        threads: int | None = None,
    ) -> None:
        self.model = model
        self.threads = threads
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.log = log or (lambda _msg: None)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.branch_excluded = branch_excluded_ids(tokenizer, self.eos_ids)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.rows_per_question = cfg.first_tokens * cfg.per_branch
        self.batch_invariant = bool(getattr(cfg, "batch_invariant", False))
        # batch-invariant: one question per decode batch, whatever batch_size says; unset: measured in _sample
        self.question_capacity = 1 if self.batch_invariant else max(1, (cfg.batch_size or 0) // self.rows_per_question)
        self.fused = fused
        self._weights = None  # the fused decoder's rearranged weights, built at the first sample()
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._measured = False  # sampling.batch_size unset: the batch size is measured once, at the first batch
        self.stats: dict[str, Any] = {}

    # -- model calls ----------------------------------------------------------------------------------------
    def _prefill(self, ids: list[int]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits after the prompt ([V]) and its per-layer keys/values ([1, heads, P, head_dim])."""
        import torch

        kwargs: dict[str, Any] = {"use_cache": True}
        if self._keep_arg:
            kwargs["logits_to_keep"] = 1
        inp = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=inp, **kwargs)
        cache = output_cache(out)
        layer_kv = [(layer.keys, layer.values) for layer in cache.layers]
        return out.logits[0, -1], layer_kv

    def close(self) -> None:
        """Nothing to release: the model lives in this process."""

    # -- the loop -------------------------------------------------------------------------------------------
    def sample(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        import torch

        before = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        # batch-invariant: the thread count stays what it is (``threads``, else torch's) for the whole run
        tune = self.device.type == "cpu" and not self.threads and not self.batch_invariant
        tuner = ThreadTuner(torch.get_num_threads(), enabled=tune)
        torch.set_num_threads(tuner.threads_for_step())  # prefills and weight packing run with it too
        try:
            with torch.inference_mode():
                self._sample_with_backoff(items, on_done, should_stop, tuner)
        finally:
            torch.set_num_threads(before)

    # -- memory back-off (issue 7): a batch that does not fit halves instead of failing the job ------------
    def _sample_with_backoff(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool],
        tuner: ThreadTuner,
    ) -> None:
        """``_sample``; on an out-of-memory error the batch is halved and the questions not reported yet are
        sampled again (each question's random stream is its own, so they get the paths they would have got).
        One question's paths are the smallest batch: if those do not fit, a clear error."""
        from db.errors import UserError

        reported: set[int] = set()

        def done(key: int, paths: list[SampledPath]) -> None:
            reported.add(key)
            on_done(key, paths)

        while True:
            todo = [item for item in items if item[0] not in reported]
            try:
                self._sample(todo, done, should_stop, tuner)
                return
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                old = self.question_capacity
                rpq = self.rows_per_question
                release_memory(self.device)
                if old <= 1:
                    raise UserError(
                        f"sampling: the {rpq} paths of one question do not fit in memory ({first_line(exc, 200)}); "
                        "lower sampling.first_tokens x sampling.per_branch or sampling.max_new_tokens"
                    ) from None
                self.question_capacity = max(1, old // 2)
                self.log(
                    f"out of memory with a batch of {old * rpq} sequences ({first_line(exc, 200)}): backing off to "
                    f"{self.question_capacity * rpq} sequences ({self.question_capacity} questions at a time); "
                    f"{len(todo) - len([i for i in todo if i[0] in reported])} questions left to sample"
                )

    def _measure_capacity(
        self, n_items: int, max_len: int, tuner: ThreadTuner, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        """``sampling.batch_size`` unset: how many questions to decode together. At most as many as there are,
        and as many rows as fit in memory (:func:`engine.sampling.cache.rows_that_fit`, at most
        :data:`AUTO_MAX_ROWS`); for a long enough run, the fastest of the sizes that fit by measurement: a decode
        step at full cache length (the steady state) timed at each doubling of the question count (the faster of
        :data:`PROBE_STEPS` steps), and the
        smallest size within 5% of the best rate of rows per second is kept (it holds less memory). A cancel
        (``should_stop``) ends the measurement before the next size."""
        import torch

        from engine.sampling.cache import rows_that_fit

        rpq = self.rows_per_question
        fit = rows_that_fit(
            self.model.config, max_len, self.dtype, self.device, AUTO_MAX_ROWS, self.cfg.max_batch_memory_mb
        )
        cap = max(1, min(fit // rpq, n_items))
        if cap <= 1 or n_items * rpq * self.cfg.max_new_tokens < PROBE_MIN_WORK:
            self.log(f"sampling.batch_size unset: {cap * rpq} rows ({cap} questions; {fit} rows fit in memory)")
            return cap
        sizes = sorted({min(cap, 2**i) for i in range(cap.bit_length() + 1)})
        decoder = make_decoder(self.model, cap * rpq, max_len, self.fused, self._weights, pack=True)
        self._weights = getattr(decoder, "weights", None)
        torch.set_num_threads(tuner.threads_for_step())
        rates: dict[int, float] = {}
        for q in sizes:
            if should_stop():
                break
            b = q * rpq
            tokens = torch.zeros(b, dtype=torch.long, device=self.device)
            positions = torch.full((b,), max_len - 1, dtype=torch.long, device=self.device)
            decoder.step(tokens, positions, max_len)  # warm-up at this shape
            seconds = []
            for _ in range(PROBE_STEPS):
                started = time.perf_counter()
                decoder.step(tokens, positions, max_len)
                seconds.append(time.perf_counter() - started)
            rates[q] = b / min(seconds)
        del decoder
        if not rates:
            return cap
        chosen = fastest_capacity(rates)
        measured = ", ".join(f"{q * rpq}: {r:.0f}" for q, r in rates.items())
        self.log(
            f"sampling.batch_size unset: {chosen * rpq} rows ({chosen} questions), the fastest step measured "
            f"(rows: rows/s at full length: {measured}; {fit} rows fit in memory)"
        )
        return chosen

    def _check_batch_memory(self, rows: int, max_len: int) -> None:
        """``sampling.max_batch_memory_mb``: a decode batch whose KV cache would exceed it is refused like an
        allocation the device cannot make (and so backs off the same way)."""
        import torch

        limit = getattr(self.cfg, "max_batch_memory_mb", None)
        if not limit:
            return
        needed = kv_cache_bytes(self.model.config, rows, max_len, self.dtype)
        if needed > limit * 2**20:
            raise torch.OutOfMemoryError(
                f"a KV cache of {needed / 2**20:.1f} MiB for {rows} sequences is above "
                f"sampling.max_batch_memory_mb = {limit:g}"
            )

    def _sample(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool],
        tuner: ThreadTuner,
    ) -> None:
        import torch
        from torch.profiler import record_function

        from engine.prompts import sampling_prompt

        cfg = self.cfg
        if not items:
            return
        if self.batch_invariant:
            self._sample_alone(items, on_done, should_stop)
            return
        started = time.perf_counter()
        rpq = self.rows_per_question
        max_new = cfg.max_new_tokens
        prompts = [self.tokenizer(sampling_prompt(text)).input_ids for _key, text in items]
        max_len = max(len(p) for p in prompts) + max_new
        if not cfg.batch_size and not self._measured:
            self.question_capacity = self._measure_capacity(len(items), max_len, tuner, should_stop)
            self._measured = True
        if should_stop():  # asked during the measurement: stop before building the decode batch
            self.log("sampling stopped before the first decode step")
            return
        rows = self.question_capacity * rpq
        self._check_batch_memory(rows, max_len)
        qslots = 2 * self.question_capacity + 1  # a question slot stays taken until its slowest row ends
        work = len(items) * rpq * max(max_new - 1, 1)  # sequence-steps, roughly
        decoder = make_decoder(self.model, rows, max_len, self.fused, self._weights, pack=work >= PACK_MIN_WORK)
        self._weights = getattr(decoder, "weights", None)
        self.log(f"sampling {len(items)} questions: {type(decoder).__name__}, {rows} rows x {max_len} positions")

        # host-side per-row state of the active batch (slots 0 .. n_active-1)
        row_gid = torch.zeros(rows, dtype=torch.long)  # question slot * rpq + local path index
        row_ntok = torch.zeros(rows, dtype=torch.long)  # tokens in the path so far (branch token included)
        row_pos = torch.zeros(rows, dtype=torch.long)  # cache position the next input token is written to
        row_last = torch.zeros(rows, dtype=torch.long)  # the next input token
        tok_buf = torch.zeros(qslots * rpq, max_new, dtype=torch.long)
        lp_buf = torch.zeros(qslots * rpq, max_new, dtype=torch.float32)
        mg_buf = torch.zeros(qslots * rpq, max_new, dtype=torch.float32)  # p(top-1) - p(top-2) per token
        final_len = torch.zeros(qslots * rpq, dtype=torch.long)
        uniforms = torch.zeros(qslots, rpq, dtype=torch.float32)
        eos = torch.tensor(self.eos_ids or [-1], dtype=torch.long)
        excluded = torch.tensor(self.branch_excluded, dtype=torch.long, device=self.device)
        free_slots = list(range(qslots))
        active: dict[int, _Question] = {}  # question slot -> question
        n_active = 0
        next_item = 0
        steps = 0
        decoded_tokens = 0

        def finish(question: _Question) -> None:
            paths = self._paths(question, tok_buf, lp_buf, final_len, mg_buf)
            del active[question.slot]
            free_slots.append(question.slot)
            on_done(question.key, paths)

        while next_item < len(items) or n_active:
            if should_stop():
                self.log("sampling stopped before the end; unfinished questions are not reported")
                return
            # admit whole questions while their rows fit
            while next_item < len(items) and n_active + rpq <= rows and free_slots:
                key, _text = items[next_item]
                ids = prompts[next_item]
                next_item += 1
                with record_function(PREFILL):
                    logits, layer_kv = self._prefill(ids)
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                top_lp, top_tok = branch_tokens(logprobs, cfg.first_tokens, excluded)
                slot = free_slots.pop(0)
                question = _Question(key, slot, question_generator(cfg.seed, key), top_tok.tolist(), rpq)
                active[slot] = question
                local = torch.arange(rpq)
                branch = local // cfg.per_branch
                gids = slot * rpq + local
                tok_buf[gids, 0] = top_tok.cpu()[branch]
                lp_buf[gids, 0] = top_lp.float().cpu()[branch]
                mg_buf[gids, 0] = float(plain_margins(logprobs))
                if max_new <= 1:
                    final_len[gids] = 1
                    question.remaining = 0
                    finish(question)
                    continue
                dst = torch.arange(n_active, n_active + rpq)
                decoder.load_prompt(dst.to(self.device), layer_kv)
                row_gid[dst] = gids
                row_ntok[dst] = 1
                row_pos[dst] = len(ids)
                row_last[dst] = tok_buf[gids, 0]
                n_active += rpq
            if not n_active:
                continue

            # one decode step for every active row
            n = n_active
            for slot, question in active.items():
                if question.remaining:
                    uniforms[slot] = torch.rand(rpq, generator=question.generator)
            gid = row_gid[:n]
            u = uniforms.view(-1)[gid]
            pos = row_pos[:n]
            kv_len = int(pos.max()) + 1
            threads = tuner.threads_for_step()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            step_started = time.perf_counter()
            logits = decoder.step(row_last[:n].to(self.device), pos.to(self.device), kv_len)
            with record_function(SAMPLING_OPS):  # a named region for profilers (benchmarks/sampling.py)
                tokens, token_lp, margins = sample_step(
                    logits, u.to(self.device), cfg.top_k, cfg.top_p, cfg.temperature
                )
            tokens, token_lp, margins = tokens.cpu(), token_lp.cpu(), margins.cpu()
            tuner.record(time.perf_counter() - step_started, n)
            steps += 1
            row_pos[:n] += 1
            is_eos = torch.isin(tokens, eos)
            keep = ~is_eos
            ntok = row_ntok[:n]
            tok_buf[gid[keep], ntok[keep]] = tokens[keep]
            lp_buf[gid[keep], ntok[keep]] = token_lp[keep]
            mg_buf[gid[keep], ntok[keep]] = margins[keep]
            decoded_tokens += int(keep.sum())
            ntok += keep.long()
            row_last[:n] = torch.where(keep, tokens, row_last[:n])
            done = is_eos | (ntok >= max_new)
            if not bool(done.any()):
                continue
            done_idx = torch.nonzero(done).flatten()
            final_len[gid[done_idx]] = ntok[done_idx]
            finished_questions = []
            for g in gid[done_idx].tolist():
                question = active[g // rpq]
                question.remaining -= 1
                if question.remaining == 0:
                    finished_questions.append(question)
            # compaction: rows that stay, taken from the tail, fill the holes below the new batch size
            n_new = n - len(done_idx)
            holes = done_idx[done_idx < n_new]
            if len(holes):
                tail = torch.arange(n_new, n)
                movers = tail[~done[n_new:n]]
                for buf in (row_gid, row_ntok, row_pos, row_last):
                    buf[holes] = buf[movers]
                decoder.move_rows(movers.to(self.device), holes.to(self.device))
            n_active = n_new
            for question in finished_questions:
                finish(question)

        elapsed = time.perf_counter() - started
        self.stats = {
            "steps": steps,
            "seconds": elapsed,
            "decoded_tokens": decoded_tokens,
            "threads": [t for _step, t in tuner.history] or [tuner.current],
        }

    def _sample_alone(
        self,
        items: list[tuple[int, str]],
        on_done: Callable[[int, list[SampledPath]], None],
        should_stop: Callable[[], bool],
    ) -> None:
        """``sampling.batch_invariant``: each question decoded on its own, at a shape fixed by the question.

        The batch is the question's ``rpq`` rows, always in the same order; a row that ends (EOS or
        ``max_new_tokens``) stays in the batch and is fed its last token again, its outputs ignored, so every
        step runs the same products on ``rpq`` rows, all at the same position (attention length prompt + step);
        the cache is sized prompt + ``max_new_tokens`` (reused only by a question of the same size); the fused
        weights are packed wherever packing is available. The random numbers are the default mode's (one per
        path slot per step of the question), so the two modes differ only by rounding."""
        import torch

        from engine.prompts import sampling_prompt

        cfg = self.cfg
        rpq = self.rows_per_question
        max_new = cfg.max_new_tokens
        started = time.perf_counter()
        eos = torch.tensor(self.eos_ids or [-1], dtype=torch.long)
        excluded = torch.tensor(self.branch_excluded, dtype=torch.long, device=self.device)
        branch = torch.arange(rpq) // cfg.per_branch
        rows = torch.arange(rpq)
        decoder: Any = None
        decoder_len = 0
        steps = 0
        decoded_tokens = 0
        self.log(f"sampling {len(items)} questions batch-invariant: one question ({rpq} rows) per decode batch")
        for key, text in items:
            if should_stop():
                self.log("sampling stopped before the end; unfinished questions are not reported")
                return
            ids = self.tokenizer(sampling_prompt(text)).input_ids
            logits, layer_kv = self._prefill(ids)
            first_lp = torch.log_softmax(logits.float(), dim=-1)
            top_lp, top_tok = branch_tokens(first_lp, cfg.first_tokens, excluded)
            question = _Question(key, 0, question_generator(cfg.seed, key), top_tok.tolist(), rpq)
            tok_buf = torch.zeros(rpq, max_new, dtype=torch.long)
            lp_buf = torch.zeros(rpq, max_new, dtype=torch.float32)
            tok_buf[:, 0] = top_tok.cpu()[branch]
            lp_buf[:, 0] = top_lp.float().cpu()[branch]
            mg_buf = torch.zeros(rpq, max_new, dtype=torch.float32)
            mg_buf[:, 0] = float(plain_margins(first_lp))
            ntok = torch.ones(rpq, dtype=torch.long)
            if max_new > 1:
                length = len(ids) + max_new
                if decoder is None or decoder_len != length:
                    decoder = None  # free the previous cache first
                    self._check_batch_memory(rpq, length)
                    decoder = make_decoder(self.model, rpq, length, self.fused, self._weights, pack=True)
                    self._weights = getattr(decoder, "weights", None)
                    decoder_len = length
                decoder.load_prompt(rows.to(self.device), layer_kv)
                last = tok_buf[:, 0].clone()
                running = torch.ones(rpq, dtype=torch.bool)
                for step in range(max_new - 1):
                    if should_stop():
                        self.log("sampling stopped before the end; unfinished questions are not reported")
                        return
                    u = torch.rand(rpq, generator=question.generator)
                    pos = torch.full((rpq,), len(ids) + step, dtype=torch.long)
                    logits = decoder.step(last.to(self.device), pos.to(self.device), len(ids) + step + 1)
                    tokens, token_lp, margins = sample_step(
                        logits, u.to(self.device), cfg.top_k, cfg.top_p, cfg.temperature
                    )
                    tokens, token_lp, margins = tokens.cpu(), token_lp.cpu(), margins.cpu()
                    steps += 1
                    keep = running & ~torch.isin(tokens, eos)
                    tok_buf[keep, ntok[keep]] = tokens[keep]
                    lp_buf[keep, ntok[keep]] = token_lp[keep]
                    mg_buf[keep, ntok[keep]] = margins[keep]
                    decoded_tokens += int(keep.sum())
                    ntok += keep.long()
                    last = torch.where(keep, tokens, last)
                    running = keep & (ntok < max_new)
                    if not bool(running.any()):
                        break
            question.remaining = 0
            on_done(key, self._paths(question, tok_buf, lp_buf, ntok, mg_buf))
        self.stats = {
            "steps": steps,
            "seconds": time.perf_counter() - started,
            "decoded_tokens": decoded_tokens,
            "threads": [torch.get_num_threads()],
        }

    def _paths(self, question: _Question, tok_buf, lp_buf, final_len, mg_buf) -> list[SampledPath]:
        from engine.sampling.paths import SampledPath

        cfg = self.cfg
        rpq = self.rows_per_question
        base = question.slot * rpq
        paths = []
        for local in range(rpq):
            gid = base + local
            n = int(final_len[gid])
            ids = tok_buf[gid, :n].tolist()
            mean_lp = float(lp_buf[gid, :n].double().mean())
            branch = local // cfg.per_branch
            paths.append(
                SampledPath(
                    branch=branch,
                    sample=local % cfg.per_branch,
                    branch_token=self._decode_text([question.branch_tokens[branch]]),
                    text=self._decode_text(ids),
                    token_ids=ids,
                    tokens=n,
                    mean_logprob=mean_lp,
                    perplexity=_perplexity(mean_lp),
                    margins=mg_buf[gid, :n].tolist(),
                )
            )
        return paths

    def _decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def fastest_capacity(rates: dict[int, float], tolerance: float = 0.05) -> int:
    """The question count to decode together, from measured rows/s per count: the smallest count within
    ``tolerance`` of the best rate (a bigger batch holds more memory for a gain below the measurement's noise)."""
    best = max(rates.values())
    return min(q for q, r in rates.items() if r >= (1 - tolerance) * best)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError`` and the CPU allocator's "can't allocate memory" alike."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()


def _perplexity(mean_logprob: float) -> float:
    import math

    try:
        return math.exp(-mean_logprob)
    except OverflowError:
        return float("inf")
