"""What a tower client raises."""

from __future__ import annotations

import grpc


class ServingClientError(RuntimeError):
    """Any failure of a tower client; `code` is the gRPC status code when there is one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


class TowerMismatchError(ServingClientError):
    """The server does not serve the tower the client expects: model or version not found,
    signature, input or output missing, or sizes that differ."""


class ServingUnavailableError(ServingClientError):
    """No answer within the deadline: the server is down, unreachable or too slow."""


class ServingRequestError(ServingClientError):
    """The server rejected the request (INVALID_ARGUMENT and the like)."""
