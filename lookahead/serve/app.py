"""The HTTP routes: OpenAI's /v1/chat/completions, /v1/completions and /v1/models, with /health and /metrics.

Each request is checked (openai_schema), given a server-made id and queued on the one engine
loop; its chunks come back on an asyncio queue. Rules:
- nothing here blocks the event loop: the engine runs on its own thread (engine_loop);
- a client that goes away, streaming or not, cancels its request at once (its KV blocks freed);
- a full queue or a server shutting down answers 503 with Retry-After; a bad body 400; a request
  the engine failed, or a dead engine loop, 500; every error body is OpenAI's.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from lookahead.result import Chunk
from lookahead.serve.engine_loop import EngineLoop, EngineStopped, Failure, Job, QueueFull
from lookahead.serve.metrics import render
from lookahead.serve.openai_schema import (BadRequest, CompletionRequest, chunk, error_body, parse_body, response,
                                           usage_chunk)

RETRY_AFTER_S = 1  # what a refused client is told to wait
GONE = object()  # put on a request's queue when its client went away
ID_PREFIX = {"chat": "chatcmpl", "text": "cmpl"}


def error(status: int, message: str, param: str | None = None, code: str | None = None,
          retry: bool = False) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


class Connection:
    """One request's side on the event loop: the engine thread's chunks arrive on `queue`."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def deliver(self, event: Chunk | Failure) -> None:
        """Called on the engine thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


def make_app(engine: EngineLoop, model_name: str) -> FastAPI:
    """The app over a started engine loop; `app.state.draining = True` turns new requests away (503)."""
    app = FastAPI(title="lookahead", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining = False
    created = int(time.time())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return error(500, f"{type(e).__name__}: {e}")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, "text")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "lookahead"}]}

    @app.get("/health")
    async def health() -> JSONResponse:
        if not engine.alive:
            return JSONResponse({"status": "error", "error": engine.error or "the engine loop is not running"}, 500)
        status = "draining" if app.state.draining else "ok"
        return JSONResponse({"status": status, "waiting": engine.waiting(), "running": engine.running()},
                            503 if app.state.draining else 200)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        families = engine.metrics.families(engine.waiting(), engine.running(), engine.free_blocks(),
                                           engine.total_blocks, engine.alive)
        return PlainTextResponse(render(families), media_type="text/plain; version=0.0.4")

    async def complete(request: Request, kind: str) -> Response:
        if app.state.draining:
            engine.metrics.refused += 1
            return error(503, "the server is shutting down", code="shutting_down", retry=True)
        if not engine.alive:
            return error(500, f"the engine loop stopped: {engine.error}", code="engine_stopped")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return error(400, f"invalid JSON: {e}")
        rid = f"{ID_PREFIX[kind]}-{uuid.uuid4().hex}"
        try:
            req = parse_body(body, kind, rid)
        except BadRequest as e:
            return error(400, str(e), e.param)
        conn = Connection(asyncio.get_running_loop())
        try:
            engine.submit(Job(rid, req.spec, conn.deliver))
        except QueueFull as e:
            engine.metrics.refused += 1
            return error(503, f"the server is busy: {e}", code="queue_full", retry=True)
        except EngineStopped as e:
            if engine.alive:  # draining
                engine.metrics.refused += 1
                return error(503, str(e), code="shutting_down", retry=True)
            return error(500, str(e), code="engine_stopped")
        watcher = asyncio.create_task(cancel_on_disconnect(request, engine, rid, conn))
        if req.stream:
            return StreamingResponse(stream(req, conn, watcher, engine, model_name, created),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await whole(req, conn, watcher, engine, model_name, created)

    return app


async def cancel_on_disconnect(request: Request, engine: EngineLoop, rid: str, conn: Connection) -> None:
    """Wait for the client to go away; then cancel its request (whatever the handler is doing)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    engine.cancel(rid)
    conn.queue.put_nowait(GONE)


async def whole(req: CompletionRequest, conn: Connection, watcher: asyncio.Task, engine: EngineLoop,
                model: str, created: int) -> Response:
    """The answer of a request without streaming, once it is done."""
    done = False
    try:
        while True:
            event = await conn.queue.get()
            if event is GONE:
                done = True
                return Response(status_code=499)  # nobody reads it
            if isinstance(event, Failure):
                done = True
                return error(event.status, event.message)
            if event.result is not None:
                done = True
                if event.result.error is not None:
                    return error(500, event.result.error)
                return JSONResponse(response(req, event.result, model, created))
    finally:
        watcher.cancel()
        if not done:  # the handler itself was cancelled
            engine.cancel(req.spec.id)


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream(req: CompletionRequest, conn: Connection, watcher: asyncio.Task, engine: EngineLoop,
                 model: str, created: int):
    """Server-sent events: OpenAI's chunks as the text comes, the end, the usage if asked, `[DONE]`."""
    done = False
    try:
        if req.kind == "chat":
            yield sse(chunk(req, model, created, first=True))
        while True:
            event = await conn.queue.get()
            if event is GONE:
                done = True
                return
            if isinstance(event, Failure) or event.result is not None and event.result.error is not None:
                message = event.message if isinstance(event, Failure) else event.result.error
                done = True
                yield sse(error_body(message, "server_error"))
                break
            if event.text:
                yield sse(chunk(req, model, created, event.text))
            if event.result is not None:
                done = True
                yield sse(chunk(req, model, created, finish_reason=event.result.finish_reason))
                if req.include_usage:
                    yield sse(usage_chunk(req, event.result, model, created))
                break
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        if not done:  # the client went away (the response's task was cancelled)
            engine.cancel(req.spec.id)
