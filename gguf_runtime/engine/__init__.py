"""One engine for every generation path: requests, a scheduler over the paged KV cache, a model runner.

    request.py     a request and its samples
    output.py      the finish rules and streamed text, written once
    scheduler.py   admission and the queues
    runner.py      rows of sequences -> one forward batch -> logits
    proposers.py   draft model and n-gram proposers; accept_drafts
    constraints.py the structured-output seam
    engine.py      add_request, abort_request, step, has_unfinished, metrics
"""

from .engine import Engine, EngineMetrics, StepOutput
from .output import Generation, GenerationStats

__all__ = ["Engine", "EngineMetrics", "Generation", "GenerationStats", "StepOutput"]
