"""The small routes: GET /v1/models, GET /health, POST /tokenize and /detokenize (llama.cpp's and vLLM's
shapes), and GET / (the chat page)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ..chat_template import ChatTemplateError
from .errors import bad_request, one_line
from .protocol import DetokenizeRequest, TokenizeRequest, parse_body
from .service import Service

INDEX_PAGE = Path(__file__).parent / "static" / "index.html"
_NO_PAGE = ("<!doctype html><meta charset=utf-8><title>gguf-runtime</title><h1>gguf-runtime</h1>"
            "<p>The OpenAI-compatible API is at <code>/v1</code> (e.g. <code>GET /v1/models</code>); this build "
            "has no chat page.</p>")


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    llm = service.llm
    card = {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "gguf-runtime",
            "max_model_len": llm.n_ctx,
            "meta": {"n_ctx": llm.n_ctx, "n_ctx_train": llm.config.n_ctx_train, "n_vocab": llm.tokenizer.n_vocab, "n_embd": llm.config.n_embd,
                     "arch": llm.config.arch, "size": llm.path.stat().st_size, "file": llm.path.name,
                     "max_num_seqs": llm.max_num_seqs, "pooling": service.pooling}}
    return JSONResponse({"object": "list", "data": [card]})


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    if service.stopping or not service.worker.snapshot.alive:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def tokenize(request: Request) -> Response:
    service: Service = request.app.state.service
    req = parse_body(TokenizeRequest, await request.body())
    llm = service.llm
    given = [name for name in ("content", "prompt", "messages") if getattr(req, name) is not None]
    if len(given) != 1:
        raise bad_request("give exactly one of 'content' (or 'prompt') and 'messages'")
    add_special = next((v for v in (req.add_special, req.add_special_tokens) if v is not None), None)
    if req.messages is not None:
        messages = [m.template_dict(i) for i, m in enumerate(req.messages)]
        try:
            text = await service.in_thread(llm.render_chat, messages, req.add_generation_prompt)
        except ChatTemplateError as err:
            raise bad_request(one_line(err), param="messages") from None
        add_special = True if add_special is None else add_special
    else:
        text = req.content if req.content is not None else req.prompt
        add_special = False if add_special is None else add_special  # llama.cpp's /tokenize default
    ids = await service.in_thread(lambda: llm.tokenize(text, add_special=add_special, parse_special=True))
    body = {"tokens": ids, "count": len(ids), "max_model_len": llm.n_ctx}
    if req.with_pieces:
        tokenizer = llm.tokenizer
        body["tokens"] = [{"id": t, "piece": tokenizer.token_bytes(t).decode("utf-8", errors="replace")}
                          for t in ids]
    return JSONResponse(body)


async def detokenize(request: Request) -> Response:
    service: Service = request.app.state.service
    req = parse_body(DetokenizeRequest, await request.body())
    text = service.llm.detokenize(service.limits.checked_prompt_ids(req.tokens, "tokens"))
    return JSONResponse({"content": text, "prompt": text})  # llama.cpp's key, vLLM's key


async def index(request: Request) -> Response:
    if INDEX_PAGE.is_file():
        return FileResponse(INDEX_PAGE, media_type="text/html")
    return HTMLResponse(_NO_PAGE)
