"""TensorFlow Serving's error model: a canonical code, mapped to HTTP and gRPC the way the real server maps it.

- HTTP: the table below is TF Serving's REST handler's mapping of status codes to HTTP statuses
  (see ../shared/REFERENCE.md, "TensorFlow Serving's REST API").
- gRPC: TF Serving passes the canonical code through unchanged, `static_cast<grpc::StatusCode>(status.code())`,
  and truncates the message to 1024 characters followed by "...TRUNCATED"
  (tensorflow/serving, tensorflow_serving/model_servers/grpc_status_util.cc, `ToGRPCStatus`).
  grpc.StatusCode has one member per canonical code, under the same name, so the name carries over.
- Errors raised by the graph (tf.errors.OpError) keep their canonical code, as TF Serving returns the
  session's status; `from_graph` strips what TensorFlow appends for debugging (see its docstring).
"""

from __future__ import annotations

import re

import grpc

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "DEADLINE_EXCEEDED": 504,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
}

# canonical (absl / TensorFlow / gRPC) code numbers; tf.errors.OpError.error_code is one of these
CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

GRPC_MESSAGE_LIMIT = 1024  # TF Serving's kErrorMessageLimit


class ServingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)

    @property
    def grpc_message(self) -> str:
        if len(self.message) > GRPC_MESSAGE_LIMIT:
            return self.message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
        return self.message


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


_NODE_TAGS = re.compile(r"\s*\[\[\{\{.*?\}\}\]\]|\s*\[Op:[^\]]*\]|\s*\{\{(?:function_)?node [^}]*\}\}")
_ROOT_ERROR = re.compile(r"^\(\d+\)\s+[A-Z_]+:\s*")
_DEBUG_LINE = re.compile(
    r"^(Graph execution error:|Detected at node .*|<stack traces unavailable>|\d+ root error\(s\) found\.?|"
    r"\d+ successful operations\.?|\d+ derived errors ignored\.?|Function call stack:.*|Traceback .*|File \".*)$"
)


def root_cause(message: str) -> str:
    """The root cause TensorFlow buried in an error raised from graph execution, as one line.

    TensorFlow 2.20 (as 2.21) words an error from a signature as, for example::

        Graph execution error:

        Detected at node map/while/DecodeJpeg defined at (most recent call last):
        <stack traces unavailable>              (or indented `File "...", line N` frames)
        Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.
        \t [[{{node map/while/DecodeJpeg}}]] [Op:__inference_signature_wrapper_serve_204]

    Only the unindented lines that are not TensorFlow's own framing are kept (the root cause), the
    `[[{{node ...}}]]` / `[Op:...]` tags removed; of several root errors, the first.
    """
    text = _NODE_TAGS.sub("", message)
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _ROOT_ERROR.match(line):  # "  (0) INVALID_ARGUMENT: ..." of a several-errors report
            if kept:  # a second root error: the first one is the answer
                break
            line = _ROOT_ERROR.sub("", line)
        elif raw[:1].isspace() or _DEBUG_LINE.match(line):  # traceback frames and their code; framing
            continue
        kept.append(line)
    cause = " ".join(kept).strip() or "the model refused the request's values"
    return cause if len(cause) <= 500 else cause[:497] + "..."


def from_graph(exc: BaseException, model: str, inputs: list[str]) -> ServingError | None:
    """A tf.errors.OpError from running the graph as TF Serving reports it: the same canonical code
    (InvalidArgumentError → INVALID_ARGUMENT, REST 400), and a message that says where (the model,
    and the input when the signature has only one) followed by the root cause. None for anything
    that is not an OpError."""
    import tensorflow as tf  # loaded already: the graph raised it

    if not isinstance(exc, tf.errors.OpError):
        return None
    code = CODE_NAMES.get(exc.error_code, "UNKNOWN")
    where = f"model '{model}', input '{inputs[0]}'" if len(inputs) == 1 else f"model '{model}'"
    return ServingError(code, f"{where}: {root_cause(str(getattr(exc, 'message', exc)))}")
