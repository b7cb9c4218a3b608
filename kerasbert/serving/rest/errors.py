"""Errors as TF Serving's REST API answers them: `{"error": message}`, with its status codes.

Reference: TF Serving's `http_server.cc`, `util/status_util.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

# HTTP statuses for TF Serving's status codes (http_server.cc, ToHTTPStatusCode).
_HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class RestError(Exception):
    """An error that the server answers as `{"error": message}`.

    Args:
        message: the text of the answer's `error` field.
        code: TF Serving's status code name, which sets the HTTP status
            (`INVALID_ARGUMENT` is 400, `NOT_FOUND` is 404, ...).
    """

    def __init__(self, message, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def __str__(self):
        # absl::Status::ToString(), which TF Serving nests in some messages.
        return f"{self.code}: {self.message}"


def invalid_argument(*parts) -> RestError:
    return RestError("".join(str(p) for p in parts), "INVALID_ARGUMENT")


def not_found(*parts) -> RestError:
    return RestError("".join(str(p) for p in parts), "NOT_FOUND")
