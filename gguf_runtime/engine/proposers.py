"""Proposers for speculative decoding, and the acceptance rule that keeps the target's distribution.

A proposer drafts k tokens after a sequence's history; the engine appends them to the sequence's decode row,
so one batched target pass (shared with every other sequence's rows) verifies them all, and `accept_drafts`
keeps what the target agrees with. Acceptance follows Leviathan et al. 2023, so the output distribution is
exactly the target's: draft token x drawn from q is kept with probability min(1, p(x)/q(x)); on rejection
the token is drawn from normalize(max(0, p - q)); when every draft is kept a bonus token comes from the
target's next distribution. At temperature 0 p and q are one-hot and this reduces to "keep drafts while
they equal the target argmax", so greedy output is token-identical to plain decoding.

Two proposers: a smaller model sharing the vocabulary (`DraftModelProposer`, its own KV sequence in the
draft model's pool), and prompt lookup (`NgramProposer`), which copies what followed the latest earlier
occurrence of the last n tokens: free, and good when the output repeats the input (code edits,
summaries). Deterministic drafts have a one-hot q. Each sequence has its own proposer, with its own
adaptive k (grown after a full accept, cut to just past the first rejection otherwise), and its own
`DraftPayoff`, which stops drafting while the measured time per token says it does not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PoolFullError, VocabMismatchError
from ..kv import KVCache, KVPool
from ..sampling import SampledToken, Sampler, sampled_token, softmax
from ..tokenizer import Tokenizer
from .runner import ModelRunner


# llama.cpp's limits for a compatible draft vocabulary (common/speculative.cpp)
VOCAB_MAX_SIZE_DIFFERENCE = 128
VOCAB_CHECK_START_ID = 5


def check_vocab_compatible(target: Tokenizer, draft: Tokenizer) -> None:
    """Same tokenizer model, BOS/EOS and add_bos, sizes within 128, equal token texts — as llama.cpp checks."""
    problems = []
    if target.model != draft.model:
        problems.append(f"tokenizer models differ ({target.model} vs {draft.model})")
    if (target.bos_id, target.eos_id, target.add_bos) != (draft.bos_id, draft.eos_id, draft.add_bos):
        problems.append("BOS/EOS tokens or add_bos differ")
    if abs(target.n_vocab - draft.n_vocab) > VOCAB_MAX_SIZE_DIFFERENCE:
        problems.append(f"vocabulary sizes {target.n_vocab} and {draft.n_vocab} differ by more than "
                        f"{VOCAB_MAX_SIZE_DIFFERENCE}")
    else:
        for i in range(VOCAB_CHECK_START_ID, min(target.n_vocab, draft.n_vocab)):
            if target.token_text(i) != draft.token_text(i):
                problems.append(f"token {i} is {target.token_text(i)!r} in the target but "
                                f"{draft.token_text(i)!r} in the draft")
                break
    if problems:
        raise VocabMismatchError("draft model cannot draft for this target: " + "; ".join(problems))


@dataclass
class SpecStats:
    target_passes: int = 0  # batched verify passes
    drafted: int = 0
    accepted: int = 0
    k_history: list[int] | None = None
    paused: int = 0  # times drafting stopped for a while because it was slower than plain steps

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_pass(self) -> float:
        # every pass yields its accepted drafts plus one token of the target's own
        return (self.accepted + self.target_passes) / self.target_passes if self.target_passes else 0.0


def accept_drafts(target_logits: np.ndarray, drafts: Sequence[int], draft_probs: Sequence[np.ndarray | None],
                  sampler: Sampler, history: list[int], logprobs: int | None = None) -> list[SampledToken]:
    """Verify drafts against the target's logits for the k+1 positions after history; return the kept drafts
    plus the one token the target contributes (a resample on rejection, or the bonus token).

    target_logits: (k+1, V), row j = the target's next-token logits after history + drafts[:j]
    draft_probs[j]: q, the distribution drafts[j] was drawn from, or None when the draft was deterministic
    """
    out: list[SampledToken] = []
    hist = list(history)
    for j, x in enumerate(drafts):
        row = target_logits[j]
        if sampler.params.greedy:
            token = sampler.sample(row, hist)
            out.append(sampled_token(token, row, logprobs))
            if token != x:
                return out
            hist.append(x)
            continue
        p = sampler.probs_for(row, hist)
        q_x = 1.0 if draft_probs[j] is None else float(draft_probs[j][x])
        if q_x > 0 and sampler.rng.random() < min(1.0, float(p[x]) / q_x):
            out.append(sampled_token(x, row, logprobs))
            hist.append(x)
            continue
        residual = p.astype(np.float64)
        if draft_probs[j] is None:
            residual[x] = 0.0
        else:
            residual = np.maximum(residual - draft_probs[j], 0.0)
        if not residual.sum() > 0:  # p == q: rejection had probability 0; fall back to p itself
            residual = p
        out.append(sampled_token(sampler.draw(residual), row, logprobs))
        return out
    bonus = target_logits[len(drafts)]
    out.append(sampled_token(sampler.sample(bonus, hist), bonus, logprobs))
    return out


class DraftPayoff:
    """Whether drafting pays for one sequence, measured: the seconds per generated token of its verify passes
    (its drafting plus its share of each pass) against those of its plain steps.

    Acceptance alone cannot tell. A verify row costs what this machine's small-batch matmul makes it cost,
    and a draft token what the draft model costs here: on the 2-core VM a Qwen2.5-Coder-1.5B verify row adds
    about a third of a plain step, and a 0.5B draft step another third, so drafts accepted 80 % of the time
    made decoding 0.87x as fast. A sequence's first PROBES steps are plain, to measure that side; then every
    WINDOW verify passes give a verdict. Drafting that lost stops for `backoff` plain steps (doubled, up to
    MAX_BACKOFF, each time it loses again; back to MIN_BACKOFF when it wins), which measure the plain side
    again; a winning verdict is followed by one plain step, since a step's cost grows with the context.

    The sequences of one LLM share a `PayoffMemory`: a new sequence starts from the plain step's last
    measure (no probes) and, where the last verdict lost, paused, so each request of a chat or a server does
    not pay again to learn what the last one learnt.

    Output does not depend on it at temperature 0 (greedy output is the target's, drafted or not); sampled
    output keeps the target's distribution either way, but which tokens a seed draws then depends on when
    drafting ran, and so on the machine's timing."""

    WINDOW = 4
    PROBES = 2
    MIN_BACKOFF, MAX_BACKOFF = 16, 256

    def __init__(self, memory: PayoffMemory | None = None):
        self.memory = memory if memory is not None else PayoffMemory()
        self.plain_seconds: float | None = self.memory.plain_seconds  # moving average: seconds per plain step
        self.backoff = self.memory.backoff
        # plain steps to run before drafting (again): probes where the plain side is unmeasured, a pause where
        # drafting lost last time
        self.plain_due = self.PROBES if self.plain_seconds is None else self.MIN_BACKOFF if self.memory.lost else 0
        self._window()

    def _window(self) -> None:
        self.spec_seconds, self.spec_tokens, self.spec_passes = 0.0, 0, 0
        self.resuming = False

    @property
    def drafting(self) -> bool:
        return self.plain_due == 0

    def plain_step(self, seconds: float) -> None:
        self.plain_seconds = seconds if self.plain_seconds is None else 0.75 * self.plain_seconds + 0.25 * seconds
        self.memory.plain_seconds = self.plain_seconds
        self.plain_due = max(0, self.plain_due - 1)
        self.resuming = True

    def verify_pass(self, seconds: float, tokens: int) -> bool:
        """Record one verify pass that gave `tokens` tokens; True when this verdict stops drafting. The first
        pass after plain steps is left out: a draft model catches up on the tokens it missed in it, a cost of
        resuming, paid once, not of drafting."""
        if self.resuming:
            self.resuming = False
            return False
        self.spec_seconds += seconds
        self.spec_tokens += tokens
        self.spec_passes += 1
        if self.spec_passes < self.WINDOW:
            return False
        if self.plain_seconds is None:  # no plain step was timed (e.g. the probes ran as the prompt's pass)
            self.plain_due = self.PROBES
            return False
        lost = self.spec_seconds / self.spec_tokens > self.plain_seconds
        if lost:
            self.plain_due, self.backoff = self.backoff, min(2 * self.backoff, self.MAX_BACKOFF)
        else:
            self.plain_due, self.backoff = 1, self.MIN_BACKOFF
        self.memory.lost, self.memory.backoff = lost, self.backoff
        self._window()
        return lost


@dataclass
class PayoffMemory:
    """What the last DraftPayoff verdicts of an LLM's sequences learnt, for its next sequences."""
    plain_seconds: float | None = None
    lost: bool = False
    backoff: int = DraftPayoff.MIN_BACKOFF


class Proposer:
    """Drafts tokens for one sequence and keeps its adaptive k, acceptance stats and, with adaptive=True, the
    `DraftPayoff` that pauses drafting while it is slower than plain decoding."""

    def __init__(self, draft_max: int = 16, draft_min: int = 1, p_min: float = 0.75, adaptive: bool = True,
                 memory: PayoffMemory | None = None):
        if not 1 <= draft_min <= draft_max:
            raise ValueError(f"need 1 <= draft_min <= draft_max, got {draft_min}, {draft_max}")
        self.draft_max = draft_max
        self.draft_min = draft_min
        self.p_min = p_min
        self.k = min(max(4, draft_min), draft_max)
        self.stats = SpecStats(k_history=[])
        self.payoff = DraftPayoff(memory) if adaptive else None

    @property
    def drafting(self) -> bool:
        """False while the payoff has paused drafting (the engine then runs plain steps)."""
        return self.payoff is None or self.payoff.drafting

    def timed(self, n_drafted: int, n_kept: int, seconds: float) -> None:
        """One pass of this sequence took `seconds` (its drafting and its share of the pass): a verify pass
        of n_drafted drafts keeping n_kept, or (n_drafted 0) a plain step."""
        if self.payoff is None:
            return
        if not n_drafted:
            self.payoff.plain_step(seconds)
        elif self.payoff.verify_pass(seconds, n_kept + 1):
            self.stats.paused += 1

    def propose(self, history: list[int], k: int, sampler: Sampler) -> tuple[list[int], list[np.ndarray | None]]:
        """Up to k drafts following history, with the distribution each was drawn from (None: deterministic)."""
        raise NotImplementedError

    def release(self) -> None:
        """The sequence is done: give back what the proposer holds."""

    def adapt(self, n_drafted: int, n_kept: int) -> None:
        """Record one verify pass; grow k after a full accept, shrink it to just past the first rejection."""
        s = self.stats
        s.target_passes += 1
        s.drafted += n_drafted
        s.accepted += n_kept
        if n_drafted:
            s.k_history.append(n_drafted)
            if n_kept == n_drafted:
                self.k = min(self.draft_max, self.k + 2)
            else:
                self.k = max(self.draft_min, n_kept + 1)


class DraftModelProposer(Proposer):
    """Drafts with a smaller model that shares the target's vocabulary. Its KV sequence follows the history by
    common prefix, so rejected drafts are dropped on the next proposal; when the draft pool is full it drafts
    nothing (the target goes on alone, unchanged)."""

    def __init__(self, runner: ModelRunner, pool: KVPool, n_ctx: int, draft_max: int = 16, draft_min: int = 1,
                 p_min: float = 0.75, adaptive: bool = True, memory: PayoffMemory | None = None):
        super().__init__(draft_max, draft_min, p_min, adaptive, memory)
        self.runner = runner
        self.kv = KVCache(pool, n_ctx)
        self.draft_sampler: Sampler | None = None

    def propose(self, history, k, sampler):
        if len(history) + k >= self.kv.n_ctx:
            return [], []  # past the draft's context: verify nothing, the target goes on alone
        if self.draft_sampler is None or self.draft_sampler.params is not sampler.params:
            self.draft_sampler = Sampler(sampler.params, stream=1_000_003)  # its own random stream
        drafts: list[int] = []
        qs: list[np.ndarray | None] = []
        try:
            keep = self.kv.rewind(min(self.kv.common_prefix(history), len(history) - 1))
            logits = self.runner.evaluate(self.kv, history[keep:])[-1]
            hist = list(history)
            for i in range(k):
                confidence = float(softmax(logits).max())
                if i > 0 and confidence < self.p_min:  # llama.cpp stops drafting when the draft is unsure
                    break
                if sampler.params.greedy:
                    token, q = self.draft_sampler.sample(logits, hist), None
                else:
                    q = self.draft_sampler.probs_for(logits, hist)
                    token = self.draft_sampler.draw(q)
                drafts.append(token)
                qs.append(q)
                hist.append(token)
                if i + 1 < k:
                    logits = self.runner.forward([self.kv], [[token]])[-1]
        except PoolFullError:
            pass  # the drafts so far are still valid proposals
        return drafts, qs

    def release(self) -> None:
        self.kv.release()


class NgramProposer(Proposer):
    """Prompt lookup: find the latest earlier occurrence of the last n tokens (n from ngram_max down to
    ngram_min) and propose the tokens that followed it."""

    def __init__(self, ngram_min: int = 2, ngram_max: int = 4, draft_max: int = 16, draft_min: int = 1,
                 adaptive: bool = True, memory: PayoffMemory | None = None):
        super().__init__(draft_max, draft_min, p_min=0.0, adaptive=adaptive, memory=memory)
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max

    def propose(self, history, k, sampler):
        seq = np.asarray(history, dtype=np.int64)
        for n in range(min(self.ngram_max, len(seq) - 1), self.ngram_min - 1, -1):
            tail = seq[-n:]
            # windows starting at 0..len-n-1 (the tail itself excluded) that equal the tail
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
            hits = np.flatnonzero((windows == tail).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                drafts = seq[start:start + k].tolist()
                if drafts:
                    return drafts, [None] * len(drafts)
        return [], []
