"""The engine: requests join and leave a running batch at any step; every generation path runs through it.

vLLM v1's shape at this project's scale. `add_request` validates and queues; each `step()`:

1. admits waiting requests (scheduler.py: in order, prefix-cache aware, only when the KV pool can hold
   their worst case);
2. runs one forward pass over every sample that continues (its last token, plus the drafts its proposer
   offers: speculative decoding inside the batch) and, beside them, the next prompt chunks of admitted
   requests, at most n_batch prompt tokens in all: long prompts join without stalling the others' decoding
   for more than a chunk, and prompts that arrive together are evaluated together. A finished prompt forks
   into its n samples, which share its blocks;
3. samples every sample that has logits (a verify row block when it carried drafts: accept_drafts), applying
   the finish rules (output.py) and the sample's constraint (constraints.py), and reports what it made.

Every row of a forward pass is computed as decoding it alone would compute it (see model.py), and each sample
i of a request draws from its own seeded stream, so a request's output does not depend on what else runs.

Held slots: a request added with slot="name" starts from the sequence held under that name (its common
prefix with the prompt is kept, the rest dropped) and, when it ends, leaves its sequence there instead of
releasing it. That is the single conversation of the chat REPL and of saved KV state; the server does not use
slots. Idle slots are released when a waiting request needs their blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ContextLengthError, KVCapacityError
from ..kv import KVCache, KVManager, KVPool, Reservation
from ..sampling import SampledToken, Sampler, SamplingParams
from ..tokenizer import StreamDecoder
from .constraints import build_constraint
from .output import Generation, OutputState
from .proposers import Proposer, accept_drafts
from .request import Request, Sample
from .scheduler import Scheduler


@dataclass
class StepOutput:
    request_id: str
    index: int  # which of the request's n samples
    new_token_ids: list[int]  # tokens generated this step (several with speculative decoding)
    new_text: str  # text that became final this step (UTF-8 safe; stop strings held back)
    new_logprobs: list[SampledToken] | None  # per new token, when params.logprobs is not None
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" (None while running)
    stop_reason: int | str | None  # the stop token id or stop string, as vLLM reports
    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the prefix cache
    completion_tokens: int  # generated so far for this sample
    generation: Generation | None = None  # beyond the contract: the whole result (stats too) once finished


@dataclass
class EngineMetrics:
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_free: int
    prompt_tokens_total: int
    prompt_tokens_cached_total: int
    generation_tokens_total: int
    requests_finished_total: int
    requests_aborted_total: int
    # beyond the contract: what tests and benchmarks count
    tokens_evaluated_total: int = 0  # rows run through the model (prefill + decode + verify)
    steps_total: int = 0
    decode_steps_total: int = 0  # batched decode passes
    decode_tokens_total: int = 0  # rows of those passes (last tokens and drafts)


class Engine:
    """Not thread-safe: one thread drives it (the server runs it in a dedicated thread)."""

    def __init__(self, runner, pool: KVPool, tokenizer, n_ctx: int, max_num_seqs: int = 8,
                 new_proposer: Callable[[], Proposer] | None = None):
        """runner: ModelRunner (or a test's stand-in with the same forward/evaluate/shift_keys);
        new_proposer: a fresh proposer for each sample (speculative decoding), or None."""
        if n_ctx < 8:
            raise ValueError(f"n_ctx must be at least 8, got {n_ctx}")
        self.runner = runner
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.kv = KVManager(pool, n_ctx)
        self.scheduler = Scheduler(self.kv, max_num_seqs)
        self.new_proposer = new_proposer
        self._slots: dict[str, KVCache] = {}
        self._reports: list[StepOutput] = []  # aborts, reported by the next step
        self._counts = dict(prompt=0, cached=0, generated=0, finished=0, aborted=0, steps=0, decode_steps=0,
                            decode_tokens=0)

    # ---- requests --------------------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *,
                    n_keep: int = 0, slot: str | None = None) -> None:
        """Validates everything first and raises before changing any state: ContextLengthError (prompt +1 does
        not fit n_ctx), ValueError (duplicate id, bad params), KVCapacityError (can never fit the pool),
        StructuredOutputError (bad schema/grammar: compiled here, before queuing). n > 1 forks the prompt."""
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
        if self.scheduler.request(request_id) is not None:
            raise ValueError(f"request id {request_id!r} is already running")
        prompt = self.check_prompt(prompt_token_ids)
        if slot is not None and params.n != 1:
            raise ValueError("a request continuing a held slot generates one sample (n=1)")
        max_new = params.max_tokens if params.max_tokens is not None else self.n_ctx - len(prompt)
        n_keep = max(int(n_keep), 0)
        reservation = Reservation(len(prompt), params.n, self.kv.limit_blocks(len(prompt), max_new), n_keep)
        shortfall = self.kv.shortfall(reservation)
        if shortfall is not None and n_keep:
            # sliding layers cannot also hold the kept positions their windows may reach after a shift: run
            # without (a shift that would need them ends the generation instead, as llama.cpp cannot shift)
            reservation.keep = 0
            shortfall = self.kv.shortfall(reservation)
        if shortfall is not None:
            raise KVCapacityError(f"{shortfall}: raise kv_cache_tokens or lower max_tokens / n")
        constraint = build_constraint(params, self.tokenizer)
        self.scheduler.waiting.append(Request(request_id, prompt, params, n_keep, reservation,
                                              constraint, slot))

    def check_prompt(self, prompt_token_ids, room: int = 1) -> list[int]:
        """The prompt as ints, if it is non-empty, inside the vocabulary, and leaves `room` positions of the
        context for generation; else ValueError / ContextLengthError."""
        prompt = [int(t) for t in prompt_token_ids]
        if not prompt:
            raise ValueError("the prompt is empty (no tokens); give some text or token ids")
        bad = [t for t in prompt if not 0 <= t < self.runner.n_vocab]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.runner.n_vocab})")
        if len(prompt) + room > self.n_ctx:
            raise ContextLengthError(f"prompt is {len(prompt)} tokens but the context holds {self.n_ctx} "
                                     f"(raise n_ctx or shorten the prompt)")
        return prompt

    def abort_request(self, request_id: str) -> bool:
        """Frees its KV blocks at once (pool accounting returns to what it was; a slot request leaves what it
        has computed in its slot); the next step() reports it finished with finish_reason "abort"."""
        sch = self.scheduler
        req = sch.request(request_id)
        if req is None:
            return False
        if req in sch.waiting:
            sch.waiting.remove(req)
        if req in sch.prefilling:
            sch.prefilling.remove(req)
        samples = [s for s in sch.running if s.request is req]
        sch.running = [s for s in sch.running if s.request is not req]
        reported = {s.index for s in req.samples if s not in samples}  # finished before: reported already
        for s in samples:
            s.out.finish("abort")
            s.out.close()
            if s.proposer is not None:
                s.proposer.release()
        live = {s.index: s for s in samples}
        for i in range(req.params.n):
            if i in reported:
                continue
            s = live.get(i)
            self._reports.append(StepOutput(
                request_id, i, [], "", [] if req.params.logprobs is not None else None, True, "abort", None,
                len(req.prompt), req.cached_tokens, s.out.n_generated if s else 0,
                s.out.result if s else Generation(finish_reason="abort")))
        self._end(req)
        self._counts["aborted"] += 1
        return True

    def has_unfinished(self) -> bool:
        return len(self.scheduler) > 0 or bool(self._reports)

    def metrics(self) -> EngineMetrics:
        pool, c = self.kv.pool, self._counts
        return EngineMetrics(
            running=self.scheduler.sequences_in_flight, waiting=len(self.scheduler.waiting),
            kv_blocks_total=pool.n_blocks, kv_blocks_used=pool.n_used, kv_blocks_free=pool.n_free,
            prompt_tokens_total=c["prompt"], prompt_tokens_cached_total=c["cached"],
            generation_tokens_total=c["generated"], requests_finished_total=c["finished"],
            requests_aborted_total=c["aborted"], tokens_evaluated_total=self.runner.tokens_evaluated,
            steps_total=c["steps"], decode_steps_total=c["decode_steps"], decode_tokens_total=c["decode_tokens"])

    @property
    def prefix_caching(self) -> bool:
        """Whether a prompt may reuse blocks another request computed."""
        return self.kv.pool.prefix_caching

    @prefix_caching.setter
    def prefix_caching(self, on: bool) -> None:
        self.kv.pool.prefix_caching = bool(on)

    # ---- held slots ------------------------------------------------------------------------------------------

    def slot(self, name: str) -> KVCache:
        """The sequence held under name (created empty): what the next request of that slot continues."""
        if name not in self._slots:
            self._slots[name] = self.kv.new_sequence()
        return self._slots[name]

    def release_slot(self, name: str) -> None:
        """Forget the slot's sequence; its blocks stay cached in the pool for prefix reuse."""
        kv = self._slots.pop(name, None)
        if kv is not None:
            kv.release()

    def _release_idle_slots(self) -> bool:
        busy = {r.slot for r in list(self.scheduler.waiting) + self.scheduler.prefilling} | \
               {s.request.slot for s in self.scheduler.running}
        idle = [name for name, kv in self._slots.items() if name not in busy and kv.n]
        for name in idle:
            self.release_slot(name)
        return bool(idle)

    # ---- one step --------------------------------------------------------------------------------------------

    def step(self) -> list[StepOutput]:
        """One scheduler iteration (see the module docstring); a delta for every sample that produced tokens
        or finished this step."""
        self._counts["steps"] += 1
        outputs, self._reports = self._reports, []
        for req in self.scheduler.admit(self._start, self._release_idle_slots):
            self._counts["prompt"] += len(req.prompt)
            self._counts["cached"] += req.cached_tokens
            req.t_admitted = time.perf_counter()
        outputs += self._forward()
        outputs += [self._sample(s) for s in list(self.scheduler.running) if s.logits is not None]
        return outputs

    def _start(self, req: Request) -> None:
        """The prompt's sequence: the slot's (common prefix kept) or a new one reusing cached blocks."""
        prompt = req.prompt
        if req.slot is not None:
            kv = self.slot(req.slot)
            del self._slots[req.slot]  # the request owns it until it ends
        else:
            kv = self.kv.new_sequence()
        kv.keep = req.reservation.keep  # (set first: what the sequence can continue from depends on it)
        # the last token runs again for its logits
        keep = kv.rewind(min(kv.common_prefix(prompt), len(prompt) - 1))
        keep += kv.reuse_prefix(prompt, limit=len(prompt) - 1)
        req.kv, req.cached_tokens = kv, keep
        req.pending = np.asarray(prompt[keep:], dtype=np.int64)
        req.reservation.sequences = [kv]

    def _prefill_chunks(self) -> list[tuple[Request, np.ndarray]]:
        """The next prompt chunk of each admitted request, in order, n_batch tokens in all."""
        chunks, budget = [], self.runner.n_batch
        for req in self.scheduler.prefilling:
            if budget == 0:
                break
            chunk, req.pending = req.pending[:budget], req.pending[budget:]
            chunks.append((req, chunk))
            budget -= len(chunk)
        return chunks

    def _fork(self, req: Request, logits: np.ndarray) -> None:
        """The prompt is evaluated: its n samples, sharing its blocks."""
        now = time.perf_counter()
        kvs = [req.kv] + [req.kv.fork() for _ in range(req.params.n - 1)]
        req.reservation.sequences, req.reservation.forked = kvs, True
        limit = req.params.max_tokens if req.params.max_tokens is not None else self.n_ctx - len(req.prompt)
        for i, kv in enumerate(kvs):
            decoder = StreamDecoder(self.tokenizer, skip_special=req.params.skip_special_tokens)
            out = OutputState(req.params, self.tokenizer.eog_ids, decoder, limit)
            proposer = self.new_proposer() if self.new_proposer is not None else None
            st = out.result.stats
            st.prompt_tokens, st.reused_tokens, st.prefill_seconds = len(req.prompt), req.cached_tokens, \
                now - req.t_admitted
            st.speculative = proposer.stats if proposer is not None else None
            constraint = req.constraint if i == 0 or req.constraint is None else req.constraint.fork()
            sample = Sample(req, i, kv, Sampler(req.params, stream=i), out, list(req.prompt), constraint, proposer,
                            logits=logits, t_first=now)
            req.samples.append(sample)
            self.scheduler.running.append(sample)
        if req.constraint is not None and req.params.n > 1:
            req.constraint = req.samples[0].constraint

    def _sample(self, s: Sample) -> StepOutput:
        """Sample s's pending logits (verifying its drafts, if any), apply the finish rules."""
        t0 = time.perf_counter()
        rows, drafts = s.logits, s.drafts
        s.logits, s.drafts = None, []
        n_kept = 0
        if drafts:
            if s.constraint is not None:
                _mask_rows(s.constraint, rows, drafts)
            tokens = accept_drafts(rows, drafts, s.draft_probs, s.sampler, s.history, s.request.params.logprobs)
            n_kept = len(tokens) - 1
            s.kv.truncate(s.kv.n - (len(drafts) - n_kept))  # drop the rejected drafts' K/V
            s.proposer.adapt(len(drafts), n_kept)
        else:
            logits = s.out.mask_logits(rows[-1])
            if s.constraint is not None:
                logits = np.array(logits, copy=True)
                s.constraint.mask(logits)
            tokens = [s.sampler.step(logits, s.history)]
        if s.proposer is not None and s.pass_seconds is not None:  # (None: the prompt's pass)
            s.proposer.timed(len(drafts), n_kept, s.pass_seconds + time.perf_counter() - t0)  # (+ its sampling)
        s.pass_seconds = None
        text = []
        for t in tokens:
            s.history.append(t.token_id)
            text.append(s.out.push(t))
            if s.constraint is not None and not s.out.done:
                s.constraint.accept(t.token_id)
                if s.constraint.is_terminated():
                    s.out.finish("stop")
            if s.out.done:
                break
        return self._report(s, "".join(text))

    def _forward(self) -> list[StepOutput]:
        """One forward pass: each running sample's last token, plus its drafts, and the next prompt chunks;
        samples whose context is full and cannot shift finish here instead."""
        rows, finished = [], []
        for s in list(self.scheduler.running):
            t0 = time.perf_counter()
            drafts, probs = self._propose(s)
            s.pass_seconds = time.perf_counter() - t0
            if s.kv.n + 1 + len(drafts) > self.n_ctx:
                drafts, probs = [], []
            max_rows = self.kv.pool.max_rows  # (a sliding-window pool is sized for passes of this many rows)
            if max_rows is not None and len(drafts) >= max_rows:
                drafts, probs = drafts[:max_rows - 1], probs[:max_rows - 1]
            if s.kv.n + 1 > self.n_ctx:
                try:
                    if not s.out.may_shift:
                        raise ContextLengthError("context full")
                    s.kv.make_room(1, s.request.n_keep, self.runner.shift_keys)
                except ContextLengthError:
                    s.out.finish("length")
                    finished.append(self._report(s, ""))
                    continue
            s.drafts, s.draft_probs = drafts, probs
            rows.append(s)
        chunks = self._prefill_chunks()
        if not rows and not chunks:
            return finished
        token_lists = [[s.history[-1]] + s.drafts for s in rows] + [chunk for _, chunk in chunks]
        wanted = [len(s.drafts) + 1 for s in rows] + \
                 [int(len(req.pending) == 0) for req, _ in chunks]  # a prompt's last row, once it is all in
        t0 = time.perf_counter()
        logits = self.runner.forward([s.kv for s in rows] + [req.kv for req, _ in chunks], token_lists, wanted)
        per_row = (time.perf_counter() - t0) / sum(len(t) for t in token_lists)
        start = 0
        for s, n in zip(rows, wanted):
            s.logits, start = logits[start:start + n], start + n
            s.pass_seconds += per_row * n  # its drafting, and its rows' share of the pass
        for req, _ in chunks:
            if len(req.pending) == 0:
                self.scheduler.prefilling.remove(req)
                self._fork(req, logits[start:start + 1])
                start += 1
        if rows:
            self._counts["decode_steps"] += 1
            self._counts["decode_tokens"] += sum(len(t) for t in token_lists[:len(rows)])
        return finished

    def _propose(self, s: Sample) -> tuple[list[int], list]:
        """Drafts for s's next verify, within what it may still generate and what its context holds."""
        if s.proposer is None or not s.out.stop_tokens_allowed or not s.proposer.drafting:
            return [], []  # (plain steps while EOG is forbidden, or while drafting does not pay)
        k = min(s.proposer.k, s.out.remaining, self.n_ctx - s.kv.n - 1)  # (a kept last draft ends it)
        if k < 1:
            return [], []
        drafts, probs = s.proposer.propose(s.history, k, s.sampler)
        if s.constraint is not None and drafts:
            n = s.constraint.valid_prefix(drafts)
            drafts, probs = drafts[:n], probs[:n]
        return drafts, probs

    # ---- outputs ---------------------------------------------------------------------------------------------

    def _report(self, s: Sample, text: str) -> StepOutput:
        out, result = s.out, s.out.result
        if out.done:
            text += out.close()
            result.stats.decode_seconds = time.perf_counter() - s.t_first
            self._finish_sample(s)
        new_ids = result.token_ids[s.reported:]
        self._counts["generated"] += len(new_ids)
        s.reported = len(result.token_ids)
        logprobs = None
        if result.logprobs is not None:
            logprobs, s.reported_logprobs = result.logprobs[s.reported_logprobs:], len(result.logprobs)
        req = s.request
        return StepOutput(req.request_id, s.index, new_ids, text, logprobs, out.done, result.finish_reason,
                          result.stop_reason, len(req.prompt), req.cached_tokens, out.n_generated,
                          result if out.done else None)

    def _finish_sample(self, s: Sample) -> None:
        self.scheduler.running.remove(s)
        if s.proposer is not None:
            s.proposer.release()
        req = s.request
        if all(x.out.done for x in req.samples) and len(req.samples) == req.params.n:
            self._end(req)
            self._counts["finished"] += 1

    def _end(self, req: Request) -> None:
        """The request is over: its blocks go back (or its sequence stays in its slot)."""
        if req.slot is not None and req.kv is not None:
            req.reservation.sequences = [kv for kv in req.reservation.sequences if kv is not req.kv]
            self.release_slot(req.slot)
            self._slots[req.slot] = req.kv
        self.kv.release(req.reservation)


def _mask_rows(constraint, rows: np.ndarray, drafts: list[int]) -> None:
    """Mask verify row j as the constraint stands after drafts[:j] (on a copy of its state)."""
    state = constraint.fork()
    for j in range(len(rows)):
        state.mask(rows[j])
        if j < len(drafts):
            state.accept(drafts[j])
