"""A request and its samples: what the engine keeps for each between steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..kv import KVCache, Reservation
from ..sampling import Sampler, SamplingParams
from .constraints import Constraint
from .output import OutputState
from .proposers import Proposer


@dataclass
class Request:
    """One add_request call: a prompt evaluated once, then forked into params.n samples."""
    request_id: str
    prompt: list[int]
    params: SamplingParams
    n_keep: int  # positions a context shift keeps
    reservation: Reservation  # its worst case in the KV pool (kv/manager.py)
    constraint: Constraint | None = None
    slot: str | None = None  # continue from, and leave its sequence in, this held slot (see Engine)
    kv: KVCache | None = None  # the prompt's sequence while it is being evaluated
    pending: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # prompt tokens left to run
    cached_tokens: int = 0  # prompt tokens found in the KV cache
    t_admitted: float = 0.0
    samples: list["Sample"] = field(default_factory=list)


@dataclass
class Sample:
    """One of a request's n samples, decoding."""
    request: Request
    index: int
    kv: KVCache
    sampler: Sampler
    out: OutputState
    history: list[int]  # prompt + generated tokens (the last one not yet in the KV cache)
    constraint: Constraint | None = None
    proposer: Proposer | None = None
    logits: np.ndarray | None = None  # (rows, V) next-token logits not yet sampled: 1 row, or k+1 to verify
    drafts: list[int] = field(default_factory=list)  # the drafts `logits` verifies
    draft_probs: list = field(default_factory=list)
    t_first: float = 0.0
    pass_seconds: float | None = None  # of the pass `logits` came from: drafting + its rows' share (None: prefill)
    reported: int = 0  # tokens already returned in StepOutputs
    reported_logprobs: int = 0
