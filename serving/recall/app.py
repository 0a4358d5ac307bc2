"""The HTTP layer: FastAPI routes, the API key, request bounds, metrics; `serve` under uvicorn.

    POST /recall   {"user_vector": [U floats]} or {"history": [ids]}, "n", "exclude_seen"
                   -> {"items": [{"item_id", "score" (logit), "probability"}], "version"}
    GET  /health   200 when a version is served (versions, items, backend), else 503 and why
    GET  /metrics  Prometheus text

Bad requests are 422 and name the field; a body over `max_body_bytes` is 413; without the
API key (when one is set) 401; with nothing consistent to serve, or a dependency down, 503.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from serving.recall.service import (
    DEFAULT_POLL_S,
    DEFAULT_TIMEOUT_S,
    RecallError,
    RecallService,
    log,
)

MAX_N = 1000
MAX_HISTORY = 1000
MAX_ID_CHARS = 256
MAX_VECTOR_DIM = 4096
MAX_BODY_BYTES = 1 << 20  # the longest history of the longest ids is ~260 KB
API_KEY_HEADER = "x-api-key"

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Number = Annotated[float, Field(allow_inf_nan=False)]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RecallRequest(BaseModel):
    """Exactly one of `user_vector` (the pretrained user vector) and `history` (item ids,
    oldest -> newest); the top `n`; `exclude_seen` drops the history's items."""

    model_config = ConfigDict(extra="forbid")

    user_vector: list[Number] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM)
    history: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_HISTORY)
    n: int = Field(10, ge=1, le=MAX_N)
    exclude_seen: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> RecallRequest:
        given = [name for name in ("user_vector", "history") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of user_vector, history; got {given or 'none'}")
        if self.exclude_seen and self.history is None:
            raise ValueError("exclude_seen applies to a history only")
        return self


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class Gate:
    """ASGI middleware before every route: metrics, the API key, the body size bound."""

    def __init__(self, app: Any, *, api_key: str | None, service: RecallService, max_body: int):
        self.app, self.service, self.max_body = app, service, max_body
        self.api_key = api_key.encode() if api_key else None

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(API_KEY_HEADER.encode())
        if given is None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and not self._authorised(scope):
                body = {"error": "missing or wrong API key (X-API-Key)", "field": API_KEY_HEADER}
                await _send_json(recording, 401, body, [(b"www-authenticate", b"Bearer")])
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                declared = dict(scope["headers"]).get(b"content-length")
                body = None
                if declared is None or int(declared) <= self.max_body:
                    body = await self._read_body(receive)
                if body is None:
                    message = f"body: larger than {self.max_body} bytes"
                    await _send_json(recording, 413, {"error": message, "field": "body"})
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, recording)
        finally:
            self.service.metrics.observe(scope["path"], status[0], time.perf_counter() - started)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes `max_body` (the rest is not read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
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
    """422 whose message starts with the field at fault (`body` for the whole request)."""
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"] if part != "body"]
        if item["type"] == "json_invalid":
            problems.append(("body", "malformed JSON"))
        elif item["type"] == "value_error" and not location:
            message = item["msg"].removeprefix("Value error, ")
            field = "exclude_seen" if message.startswith("exclude_seen") else "user_vector|history"
            problems.append((field, message))
        else:
            problems.append((".".join(location) or "body", item["msg"]))
    field, message = problems[0] if problems else ("body", "invalid request")
    return JSONResponse(
        {
            "error": f"{field}: {message}",
            "field": field,
            "errors": [{"field": f, "message": m} for f, m in problems],
        },
        422,
    )


def create_app(
    service: RecallService, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The ASGI app over `service`; the watcher runs while the app does (lifespan)."""

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
        return JSONResponse(error.body(), error.status)

    @app.post("/recall")
    def recall(request: RecallRequest) -> JSONResponse:  # sync: runs in the thread pool
        """Top n items with the model's logits and probabilities."""
        return JSONResponse(
            service.recall(
                user_vector=request.user_vector,
                history=request.history,
                n=request.n,
                exclude_seen=request.exclude_seen,
            )
        )

    @app.get("/health")
    def health() -> JSONResponse:
        ready, body = service.health()
        return JSONResponse(body, 200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        service.health()  # refreshes the ready gauge
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    app.add_middleware(Gate, api_key=api_key, service=service, max_body=max_body_bytes)
    return app


def build_service(
    *,
    output_dir: str | Path,
    serving_dir: str | Path | None = None,
    tf_serving: str,
    redis_url: str | None = None,
    last_n: int | None = None,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    model_name: str = "user_tower",
) -> RecallService:
    """A RecallService whose user tower is TF Serving's `model_name` at `tf_serving` (gRPC)."""
    from serving.client import UserTowerClient

    tower = UserTowerClient(tf_serving, model_name=model_name, timeout_s=timeout_s, retries=0)
    kwargs = {"last_n": last_n} if last_n is not None else {}
    return RecallService(
        output_dir,
        tower,
        serving_dir=serving_dir,
        redis_url=redis_url,
        poll_s=poll_s,
        timeout_s=timeout_s,
        **kwargs,
    )


def serve(
    service: RecallService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """Run the service under uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("listening on %s without an API key: anyone who reaches it can query", host)
    uvicorn.run(
        create_app(service, api_key=api_key),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )
