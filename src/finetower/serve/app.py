"""The HTTP layer: FastAPI routes, API key, body limits, and `serve` under uvicorn."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from finetower.serve.metrics import ROUTES, Metrics
from finetower.serve.service import (
    API_KEY_ENV,
    DEFAULT_POLL_S,
    MAX_BODY_BYTES,
    MAX_HISTORY,
    MAX_K,
    RecallError,
    RecallRequest,
    RecallService,
    Snapshot,
    log,
    top_k,
)
from finetower.user_vectors import DEFAULT_LAST_N

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


class _Gate:
    """ASGI middleware in front of every route: metrics, the API key, the body size bound."""

    def __init__(self, app: Any, *, api_key: str | None, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.api_key = api_key.encode() if api_key else None

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key")
        if given is None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = [500]

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and not self._authorised(scope):
                await _send_json(
                    send_recording, 401,
                    {"error": "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                     "field": None},
                    [(b"www-authenticate", b"Bearer")],
                )  # fmt: skip
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive)
                if body is None:
                    too_big = f"body: larger than {self.max_body} bytes"
                    await _send_json(send_recording, 413, {"error": too_big, "field": "body"})
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_recording)
        except Exception:
            self.metrics.error("internal")
            raise
        finally:
            self.metrics.observe(route, status[0], time.perf_counter() - started)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes `max_body` (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left; the app sees an empty body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _validation_response(error: RequestValidationError) -> JSONResponse:
    """400 for malformed JSON, else 422; the message starts with the field's name."""
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"] if part != "body"]
        if item["type"] == "json_invalid":
            at = f" at position {location[0]}" if location else ""
            reason = (item.get("ctx") or {}).get("error", "")
            problems.append(("body", f"malformed JSON{at}: {reason}".rstrip(": ")))
        else:
            problems.append((".".join(location) or "body", item["msg"]))
    status = 400 if any(p[1].startswith("malformed JSON") for p in problems) else 422
    field, message = problems[0] if problems else ("body", "invalid request")
    return JSONResponse(
        {
            "error": f"{field}: {message}",
            "field": field,
            "errors": [{"field": f, "message": m} for f, m in problems],
        },
        status,
    )


def create_app(
    index_dir: str | Path,
    redis_url: str | None = None,
    api_key: str | None = None,
    *,
    models_dir: str | Path | None = None,
    user_vectors: str | Path | None = None,
    last_n: int | None = DEFAULT_LAST_N,
    poll_interval_s: float = DEFAULT_POLL_S,
    history_vectors: str = "store",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The recall service's ASGI app; see the module docstring for where things come from.

    `api_key` (default: $FINETOWER_API_KEY) is then required on every request. Local
    artifacts are loaded here (errors surface now); a Redis version loads in the background
    once the app starts.
    """
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    service = RecallService(
        index_dir,
        redis_url,
        models_dir=models_dir,
        user_vectors=user_vectors,
        last_n=last_n,
        poll_interval_s=poll_interval_s,
        history_vectors=history_vectors,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="finetower recall", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_response(error)

    @app.exception_handler(RecallError)
    async def refused(_: Request, error: RecallError) -> JSONResponse:
        return error.response()

    @app.post("/recall")
    def recall(request: RecallRequest) -> JSONResponse:  # sync: runs in the thread pool
        """Top k items with the model's probabilities."""
        return JSONResponse(service.recall(request))

    @app.get("/health")
    def health() -> JSONResponse:
        """200 when a consistent model + index (+ store version) is loaded, else 503 and why."""
        ready, body = service.health()
        return JSONResponse(body, 200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        text = service.metrics.render(service.snapshot, service.health()[0])
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    app.add_middleware(_Gate, api_key=api_key, metrics=service.metrics, max_body=max_body_bytes)
    return app


def serve(
    index_dir: str | Path,
    *,
    redis_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    models_dir: str | Path | None = None,
    user_vectors: str | Path | None = None,
    last_n: int | None = DEFAULT_LAST_N,
    poll_interval_s: float = DEFAULT_POLL_S,
    history_vectors: str = "store",
    log_level: str = "info",
) -> None:
    """Run the recall service under uvicorn until interrupted (`finetower serve`)."""
    import uvicorn

    app = create_app(
        index_dir,
        redis_url,
        api_key,
        models_dir=models_dir,
        user_vectors=user_vectors,
        last_n=last_n,
        poll_interval_s=poll_interval_s,
        history_vectors=history_vectors,
    )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not (
        api_key or os.environ.get(API_KEY_ENV)
    ):
        log.warning("listening on %s without an API key: anyone who reaches it can query", host)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HISTORY",
    "MAX_K",
    "Metrics",
    "RecallError",
    "RecallRequest",
    "RecallService",
    "Snapshot",
    "create_app",
    "serve",
    "top_k",
]
