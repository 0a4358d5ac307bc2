"""The HTTP layer: FastAPI routes, the API key, request bounds, metrics; `serve` under uvicorn.

    POST /recall        {"user_vector": [U floats]} or {"history": [ids]}, "n", "exclude_seen"
                        -> {"items": [{"item_id", "score" (logit), "probability"}], "version",
                            "ranked" (false, with a "warning", when the query is all zeros)}
    GET  /health/live   200 while the process runs
    GET  /health/ready  200 when a version is served and its user tower answered at the last
                        poll (versions, items, backend, user_vector_recipe), else 503 and
                        why; /health: the same
    GET  /metrics       Prometheus text

Bad requests are 422 and name the field (strict JSON types: no "5" for n, no "yes" for a
bool; |x| <= service.MAX_ABS_VALUE); a body over `max_body_bytes` is 413, one that does not
arrive within `body_timeout_s` 408; without the API key (when one is set) 401; more than
`max_in_flight` recall requests at once: an immediate 503 with Retry-After; with nothing
consistent to serve, or a dependency down, 503 naming what failed (addresses go to the log).
Every recall request's deadline is stamped here, on arrival: `timeout_s` later.
"""

from __future__ import annotations

import asyncio
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

from serving.recall.http import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    header_timed_h11,
)
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
DEFAULT_MAX_IN_FLIGHT = 64
RETRY_AFTER_S = 1

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Number = Annotated[float, Field(allow_inf_nan=False)]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RecallRequest(BaseModel):
    """Exactly one of `user_vector` (the pretrained user vector) and `history` (item ids,
    oldest -> newest); the top `n`; `exclude_seen` drops the history's items."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as sent, no coercion

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
    """ASGI middleware before every route: metrics, the API key, the body's size and time
    bounds, the bound on recall requests in flight, and each request's arrival stamp."""

    def __init__(
        self,
        app: Any,
        *,
        api_key: str | None,
        service: RecallService,
        max_body: int,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ):
        self.app, self.service, self.max_body = app, service, max_body
        self.api_key = api_key.encode() if api_key else None
        self.max_in_flight, self.body_timeout_s = max_in_flight, body_timeout_s
        self.in_flight = 0  # touched only on the event loop's thread

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
        scope.setdefault("state", {})["arrived"] = time.monotonic()
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        counted = scope["path"] == "/recall"
        try:
            if counted and self.in_flight >= self.max_in_flight:
                body = {"error": f"busy: {self.in_flight} requests in flight", "field": None}
                await _send_json(recording, 503, body, [(b"retry-after", b"%d" % RETRY_AFTER_S)])
                return
            self.in_flight += counted
            try:
                await self._admitted(scope, receive, recording)
            finally:
                self.in_flight -= counted
        finally:
            self.service.metrics.observe(scope["path"], status[0], time.perf_counter() - started)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key is not None and not self._authorised(scope):
            body = {"error": "missing or wrong API key (X-API-Key)", "field": API_KEY_HEADER}
            await _send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            declared = dict(scope["headers"]).get(b"content-length")
            body = None
            if declared is None or not declared.isdigit() or int(declared) <= self.max_body:
                try:
                    body = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
                except TimeoutError:
                    message = f"body: not received within {self.body_timeout_s} s"
                    await _send_json(send, 408, {"error": message, "field": "body"})
                    return
            if body is None:
                message = f"body: larger than {self.max_body} bytes"
                await _send_json(send, 413, {"error": message, "field": "body"})
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

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
    service: RecallService,
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> FastAPI:
    """The ASGI app over `service`; the watcher runs while the app does (lifespan)."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        import anyio.to_thread

        # every admitted recall request gets a thread at once: none queues for one while
        # its deadline runs (anyio's default is 40)
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, max_in_flight + 8)
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
    def recall(request: RecallRequest, http: Request) -> JSONResponse:  # sync: a pool thread
        """Top n items with the model's logits and probabilities."""
        return JSONResponse(
            service.recall(
                user_vector=request.user_vector,
                history=request.history,
                n=request.n,
                exclude_seen=request.exclude_seen,
                deadline=http.state.arrived + service.timeout_s,
            )
        )

    @app.get("/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/health/ready")
    @app.get("/health")
    async def ready() -> JSONResponse:
        is_ready, body = service.health()
        return JSONResponse(body, 200 if is_ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        service.health()  # refreshes the ready gauge
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    app.add_middleware(
        Gate,
        api_key=api_key,
        service=service,
        max_body=max_body_bytes,
        max_in_flight=max_in_flight,
        body_timeout_s=body_timeout_s,
    )
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
    serving_log=None,
) -> RecallService:
    """A RecallService whose user tower is TF Serving's `model_name` at `tf_serving` (gRPC);
    `last_n` for versions without a recorded recipe; `serving_log` a `skew_log.ServingLog`."""
    from serving.client import UserTowerClient

    tower = UserTowerClient(tf_serving, model_name=model_name, timeout_s=timeout_s, retries=0)
    return RecallService(
        output_dir,
        tower,
        serving_dir=serving_dir,
        redis_url=redis_url,
        last_n=last_n,
        poll_s=poll_s,
        timeout_s=timeout_s,
        serving_log=serving_log,
    )


def serve(
    service: RecallService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> None:
    """Run the service under uvicorn until interrupted, with header and body read timeouts."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("listening on %s without an API key: anyone who reaches it can query", host)
    app = create_app(
        service, api_key=api_key, max_in_flight=max_in_flight, body_timeout_s=body_timeout_s
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http=header_timed_h11(header_timeout_s),
        timeout_keep_alive=5,
    )
