"""What runs next: the waiting queue, admission in arrival order, and the requests and samples in flight.

Admission (one step): requests are taken in order while a sequence slot is free (max_num_seqs counts
samples) and the KV pool can hold the request's worst case beside what admitted work may still take
(kv/manager.py); a request that does not fit waits, and everything behind it waits too, so arrival order is
kept and no request starves. Nothing admitted is ever preempted.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from ..kv import KVManager
from .request import Request, Sample


class Scheduler:
    def __init__(self, kv: KVManager, max_num_seqs: int):
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.prefilling: list[Request] = []  # admitted, prompt being evaluated (n_batch tokens a pass in all)
        self.running: list[Sample] = []  # decoding

    def __len__(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.running)

    @property
    def sequences_in_flight(self) -> int:
        return len(self.running) + sum(r.params.n for r in self.prefilling)

    def admit(self, start: Callable[[Request], None], make_room: Callable[[], bool]) -> list[Request]:
        """Admit waiting requests in order; `start(request)` gives it its prompt's sequence (prefix reuse) the
        first time it is considered; `make_room()` frees idle cached state when nothing runs and the head
        still does not fit (returns False when there is nothing to free). Returns the admitted requests."""
        admitted = []
        while self.waiting:
            req = self.waiting[0]
            busy = self.sequences_in_flight
            if busy and busy + req.params.n > self.max_num_seqs:  # (alone, n > max_num_seqs still runs)
                break
            if req.kv is None:
                start(req)
            if not self.kv.try_admit(req.reservation):
                if busy or not make_room():
                    break
                continue
            self.waiting.popleft()
            self.prefilling.append(req)
            admitted.append(req)
        return admitted

    def request(self, request_id: str) -> Request | None:
        for req in list(self.waiting) + self.prefilling:
            if req.request_id == request_id:
                return req
        for s in self.running:
            if s.request.request_id == request_id:
                return s.request
        return None
