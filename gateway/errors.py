"""The gateway's one error shape, never a traceback: {"error": "<message>", "type": ..., "backend": ...}.

Both protocols define the error body as {"error": "<message>"} with a string: TF Serving's REST API
and KServe's V2 (Triton's clients concatenate it into their exception text, and crashed on the
object this used to be). The gateway's own detail, the machine-readable type and the backend the
error concerns, sits beside it as sibling fields, which those clients ignore."""

from __future__ import annotations

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    def __init__(self, status: int, type_: str, message: str, backend: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.backend = backend
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message, "type": self.type, "backend": self.backend})

    def response(self, request_id: str | None = None) -> Response:
        headers = dict(self.headers)
        if request_id:
            headers["X-Request-ID"] = request_id
        return Response(self.body(), status_code=self.status, media_type="application/json", headers=headers)


def bad_request(message: str, type_: str = "invalid_input") -> GatewayError:
    return GatewayError(400, type_, message)


def internal_error() -> GatewayError:
    """What any unexpected exception answers, on every route: the details go to the log, not the client."""
    return GatewayError(500, "internal_error", "the gateway failed to handle this request; see its log")
