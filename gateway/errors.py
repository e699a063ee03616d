"""Every failure leaves turnout in OpenAI's error shape, so SDKs raise their usual exception classes.

`{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes: 400 for bad parameters
and bad JSON (FastAPI's 422 is replaced), 404 unknown model or route, 405, 413, 503 overloaded,
502/504 upstream failures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.backends.base import BackendError
from gateway.text import INVALID_TEXT

# pydantic names the member of a union that failed (`stop.str`, `content.list[...]`): not a param.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*)$")

CLIENT_CLOSED_REQUEST = 499  # nginx's convention for a client that hung up; nobody is there to read it


def is_failure(status: int) -> bool:
    """A request the gateway or a backend failed (5xx), as the dashboard counts "failed". A 4xx (a
    bad request, a refused key, a quota, a client that hung up: 499) is the client's, counted apart."""
    return status >= 500


def is_client_error(status: int) -> bool:
    return 400 <= status < 500

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error the gateway answers with directly (validation, routing, backend failures)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        self.type = type or _TYPE_BY_STATUS.get(status, fallback)

    @classmethod
    def from_backend(cls, exc: BackendError, headers: dict[str, str] | None = None) -> APIError:
        return cls(exc.status, str(exc), param=exc.param, code=exc.code, headers=headers)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def server_shutting_down() -> APIError:
    """The last event of a stream still running when the server's graceful shutdown ran out."""
    return APIError(503, "The server is shutting down: this stream was cut off before it finished. "
                         "Retry the request.", code="server_shutting_down")


def context_length_message(limit: int, prompt_tokens: int, completion_tokens: int) -> str:
    """OpenAI's wording for code `context_length_exceeded`, which clients match on."""
    return (f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, {completion_tokens} "
            "in the completion). Please reduce the length of the messages or completion.")


InvalidHook = Callable[[Request, APIError], None]


def install_error_handlers(app: FastAPI, on_invalid: InvalidHook | None = None) -> None:
    """`on_invalid(request, error)` sees every body the schema refused: nothing else books those."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(RequestValidationError, _validation_error_handler(on_invalid))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UnicodeEncodeError, _unencodable_text)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _backend_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BackendError)
    return APIError.from_backend(exc).response()


def _validation_error_handler(on_invalid: InvalidHook | None) -> Callable[[Request, Exception],
                                                                            Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        error = validation_error(exc.errors())
        if on_invalid is not None:
            on_invalid(request, error)
        return error.response()

    return handle


def validation_error(errors: Any) -> APIError:
    """The first pydantic error as OpenAI reports it: 400 naming the parameter."""
    first: dict[str, Any] = list(errors)[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request. "
                             "(HINT: This likely means you aren't using your HTTP library correctly.)")
    loc = [part for part in first.get("loc", ()) if part != "body" and not _UNION_TAG.match(str(part))]
    if first.get("type") == INVALID_TEXT:  # checked on the whole body: the field is in its context
        loc += list(first.get("ctx", {}).get("loc", ()))
    param = _param_path(loc)
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    missing = first.get("type") == "missing"
    if param:
        message = f"Invalid '{param}': {message}"
    else:
        message = "The request body must be a JSON object." if missing else f"Invalid request body: {message}"
    return APIError(400, message, param=param or None,
                    code="missing_required_parameter" if missing else "invalid_value")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = "Unknown request URL. Please check the URL for typos."
    elif exc.status_code == 405:
        message = "Method not allowed for this URL."
    else:
        message = str(exc.detail)
    error = APIError(exc.status_code, message, code="unknown_url" if exc.status_code == 404 else None,
                     headers=getattr(exc, "headers", None))
    return error.response()


async def _unencodable_text(request: Request, exc: Exception) -> JSONResponse:
    """JSON can spell an unpaired surrogate (`"\\ud800"`), which parses into a str that no UTF-8
    encoder accepts (cache keys, the upstream request): the client's input, so a 400, not a 500.
    Request bodies are refused at their schema, naming the field (gateway/text.py); this catches
    what is not a body (a header)."""
    assert isinstance(exc, UnicodeEncodeError)
    if "surrogate" not in exc.reason:
        return await _unexpected_error(request, exc)
    return APIError(400, "The request contains an unpaired surrogate (a \\ud800-\\udfff escape without its "
                         "pair), which is not valid Unicode.", code="invalid_value").response()


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


def sse_error(error: APIError) -> bytes:
    """The last event of a stream that failed after its headers were sent."""
    return f"data: {json.dumps(error.body())}\n\n".encode()


def _param_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path
