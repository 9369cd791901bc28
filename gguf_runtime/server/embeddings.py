"""POST /v1/embeddings: pooled final hidden states (the server's --pooling), L2-normalised, as floats or as
base64 float32 (what the official client asks for by default)."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..scoring import embedding
from .errors import bad_request
from .protocol import EmbeddingRequest, parse_body
from .service import Service, until_disconnect


async def embeddings(request: Request) -> Response:
    service: Service = request.app.state.service
    req = parse_body(EmbeddingRequest, await request.body())
    service.check_model(req.model)
    n_embd = service.llm.config.n_embd
    if req.dimensions is not None and req.dimensions != n_embd:
        raise bad_request(f"dimensions must be this model's embedding size {n_embd} (no truncation)",
                          param="dimensions")
    _, prompts = await service.in_thread(service.prompt_list, req.input, 0)
    vectors = await until_disconnect(request, _embed_all(service, prompts))
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    n_tokens = sum(len(ids) for ids in prompts)
    return JSONResponse({"object": "list", "data": data, "model": service.model_id,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


async def _embed_all(service: Service, prompts: list[list[int]]) -> list[np.ndarray]:
    llm = service.llm
    # one prompt per engine-thread call: generation steps of other clients run between them
    return [await service.worker.call(lambda ids=ids: embedding(llm.model, ids, service.pooling, True, llm.n_batch))
            for ids in prompts]


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
