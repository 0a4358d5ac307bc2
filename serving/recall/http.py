"""uvicorn with read timeouts: a client that sends its headers (or body) too slowly is cut off.

uvicorn bounds only the idle time between requests (`timeout_keep_alive`); a client that
sends a request's headers a byte at a time holds its connection (and a slot under any
connection limit) for as long as it likes. `header_timed_h11(s)` is uvicorn's h11 protocol
with a deadline from a request's first byte (or the connection's start) to its last header
line: past it, 408 and close. The body's deadline is the app's (`app.Gate`).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 5.0
_TIMEOUT_BODY = b'{"error": "headers: not received in time", "field": "headers"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class _HeaderTimedH11(H11Protocol):
    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a request's headers are still incomplete
            self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:  # once per request: trickled bytes do not extend it
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def header_timed_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a `header_timeout_s` deadline on request headers."""
    if header_timeout_s <= 0:
        raise ValueError(f"header_timeout_s must be > 0, got {header_timeout_s}")
    return type("HeaderTimedH11", (_HeaderTimedH11,), {"header_timeout_s": header_timeout_s})
