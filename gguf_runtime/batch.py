"""Continuous batching: many requests generate together over one shared paged KV pool.

Decoding is bound by reading the weights, so every step advances all running sequences with one pass over
them (`session.decode_step`). Each step of the scheduler:

1. admits waiting requests, in order, while there is a free sequence slot and the pool can hold the
   request's worst case (prompt + max_tokens, or the context) beside what running sequences may still
   take — so the pool never runs out mid-generation and nothing is preempted; a request that does not fit
   waits for others to finish;
2. evaluates one prompt chunk (at most n_batch tokens) of one admitted request, so long prompts join
   without stalling the others' decoding for more than a chunk;
3. samples the next token of every sequence that has logits, finishing those that stop;
4. runs one batched decode step for the sequences that continue.

A request with n > 1 evaluates its prompt once and forks into n sequences sharing its blocks. Prompt
blocks computed by any earlier request stay in the pool and are reused (see kv_cache.py). Every row of a
forward pass is computed as decoding it alone would compute it (see model.py), and each sample i of a
request draws from its own seeded stream, so results equal `LLM.generate` one prompt at a time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .generate import Generation, OutputBuilder, mask_stop_tokens
from .kv_cache import KVPool
from .model import Model
from .sampling import Sampler, SamplingParams
from .session import Session, decode_step
from .tokenizer import Tokenizer


@dataclass
class BatchStats:
    steps: int = 0  # scheduler iterations
    decode_steps: int = 0  # batched decode passes
    prompt_tokens: int = 0  # prompt tokens of all requests
    prompt_tokens_evaluated: int = 0  # of those, run through the model (the rest came from cached blocks)
    decode_tokens: int = 0  # tokens run through decode steps
    max_running: int = 0  # most sequences decoding at once
    seconds: float = 0.0

    @property
    def tokens_evaluated(self) -> int:
        return self.prompt_tokens_evaluated + self.decode_tokens


@dataclass
class _Request:
    index: int
    prompt: list[int]
    params: SamplingParams
    session: Session | None = None
    limit_blocks: int = 0  # blocks one of its sequences may hold at most
    t_start: float = 0.0


@dataclass
class _Sequence:
    request: _Request
    sample: int  # which of the request's n outputs
    session: Session
    sampler: Sampler
    out: OutputBuilder
    history: list[int]
    logits: np.ndarray | None = None  # next-token logits not yet sampled
    t_first: float = 0.0


def generate_batch(model: Model, tokenizer: Tokenizer, pool: KVPool, prompts: list[list[int]],
                   params: list[SamplingParams], n_ctx: int, n_batch: int = 256, max_num_seqs: int = 8,
                   stats: BatchStats | None = None) -> list[list[Generation]]:
    """Generate for every prompt (params[i].n outputs each); returns the Generations per prompt, in order."""
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
    stats = stats if stats is not None else BatchStats()
    t0 = time.perf_counter()
    waiting = deque(_Request(i, p, sp) for i, (p, sp) in enumerate(zip(prompts, params)))
    results: list[list[Generation | None]] = [[None] * sp.n for sp in params]
    prefilling: list[_Request] = []
    running: list[_Sequence] = []
    bt = pool.block_tokens

    def outstanding() -> int:
        """Blocks admitted work may still take from the pool."""
        total = sum(max(0, s.request.limit_blocks - len(s.session.cache.blocks)) for s in running)
        for r in prefilling:
            cache = r.session.cache
            prompt_blocks = -(-len(r.prompt) // bt)
            total += max(0, prompt_blocks - len(cache.blocks))
            total += r.params.n * (r.limit_blocks - len(r.prompt) // bt)
        return total

    while waiting or prefilling or running:
        stats.steps += 1
        # 1. admission
        while waiting:
            slots = len(running) + sum(r.params.n for r in prefilling)
            if slots and slots + waiting[0].params.n > max_num_seqs:  # (alone, n > max_num_seqs still runs)
                break
            req = waiting[0]
            req.session = Session(model, n_ctx, n_batch, pool=pool)
            req.session.start_prompt(req.prompt)
            max_new = req.params.max_tokens if req.params.max_tokens is not None else n_ctx - len(req.prompt)
            req.limit_blocks = -(-min(len(req.prompt) + max_new, n_ctx) // bt) + 1  # +1: copy-on-write
            need = (-(-len(req.prompt) // bt) - len(req.session.cache.blocks)
                    + req.params.n * (req.limit_blocks - len(req.prompt) // bt))
            if need > pool.n_free - outstanding():
                req.session.cache.release()
                if not (running or prefilling):
                    raise MemoryError(f"request {req.index} needs {need} KV blocks of {bt} tokens but the pool "
                                      f"has {pool.n_free} free: raise kv_cache_tokens or lower max_tokens / n")
                break
            waiting.popleft()
            req.t_start = time.perf_counter()
            stats.prompt_tokens += len(req.prompt)
            prefilling.append(req)

        # 2. one prompt chunk
        if prefilling:
            req = prefilling[0]
            before = req.session.prompt_pending
            logits = req.session.step_prompt()
            stats.prompt_tokens_evaluated += before - req.session.prompt_pending
            if logits is not None:
                prefilling.pop(0)
                running.extend(_start_sequences(req, logits[-1], tokenizer, n_ctx))

        # 3. sample
        continuing: list[_Sequence] = []
        for seq in running:
            if seq.logits is None:
                continue
            out = seq.out
            logits = mask_stop_tokens(seq.logits, out.result.stats.generated_tokens, seq.request.params.min_tokens,
                                      out.stop_ids_array)
            seq.logits = None
            sampled = seq.sampler.step(logits, seq.history)
            seq.history.append(sampled.token_id)
            out.push(sampled)
            if not out.done and seq.session.cache.free == 0 and seq.request.params.max_tokens is None:
                out.finish("length")
            if out.done:
                _finish(seq, results)
            else:
                continuing.append(seq)
        running = [s for s in running if not s.out.done]
        stats.max_running = max(stats.max_running, len(running))

        # 4. one batched decode step
        if continuing:
            logits = decode_step([s.session for s in continuing], [s.history[-1] for s in continuing],
                                 [0] * len(continuing))
            stats.decode_steps += 1
            stats.decode_tokens += len(continuing)
            for seq, row in zip(continuing, logits):
                seq.logits = row
    stats.seconds = time.perf_counter() - t0
    return results  # type: ignore[return-value]


def _start_sequences(req: _Request, logits: np.ndarray, tokenizer: Tokenizer, n_ctx: int) -> list[_Sequence]:
    """The request's prompt is evaluated: fork it into its n sequences (sharing the prompt's blocks)."""
    now = time.perf_counter()
    sessions = [req.session] + [req.session.fork() for _ in range(req.params.n - 1)]
    limit = req.params.max_tokens if req.params.max_tokens is not None else n_ctx - len(req.prompt)
    seqs = []
    for i, session in enumerate(sessions):
        out = OutputBuilder(tokenizer, req.params, limit)
        st = out.result.stats
        st.prompt_tokens, st.reused_tokens, st.prefill_seconds = len(req.prompt), req.session.reused, now - req.t_start
        seqs.append(_Sequence(req, i, session, Sampler(req.params, stream=i), out, list(req.prompt),
                              logits=logits, t_first=now))
    return seqs


def _finish(seq: _Sequence, results: list[list[Generation | None]]) -> None:
    seq.out.close()
    seq.out.result.stats.decode_seconds = time.perf_counter() - seq.t_first
    seq.session.cache.release()
    results[seq.request.index][seq.sample] = seq.out.result
