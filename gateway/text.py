"""Refuse request text that is not valid Unicode, at the request schema, naming the field.

JSON can spell an unpaired surrogate (`"\\ud800"`), which parses into a Python str that no UTF-8
encoder accepts; a body that is not UTF-8 at all is decoded with `surrogateescape`
(gateway/api/json_body.py), so its bad bytes become the same kind of character. Left in, either one
fails deep in the request path (the cache key digest, the tokenizer, the upstream request) as a 500
booked against a backend; caught here it is the client's 400 `invalid_value` with the field as `param`.
The whole body is walked, pass-through extras (tools, response_format, …) included, since they too
reach cache keys and backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]

INVALID_TEXT = "invalid_text"  # the pydantic error type; gateway.errors reads the field from its ctx
MESSAGE = ("text must be valid Unicode: it contains an unpaired surrogate (a \\ud800-\\udfff escape without "
           "its pair) or bytes that are not UTF-8")


def is_unencodable(text: str) -> bool:
    """True when `text` holds a surrogate code point, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_unencodable(value: Any, loc: Loc = ()) -> Loc | None:
    """The location of the first string (or object key) in a parsed JSON value that is not valid Unicode."""
    for where, text in _strings(value, loc):
        if is_unencodable(text):
            return where
    return None


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every string of a JSON value with its location; an object's keys are located at the object."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield loc, key
            yield from _strings(item, (*loc, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


class ValidText(BaseModel):
    """Base of a request body whose every string must be valid Unicode (checked before field validation,
    so the error names the field rather than whatever later choked on it)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        loc = first_unencodable(data)
        if loc is not None:
            raise PydanticCustomError(INVALID_TEXT, MESSAGE, {"loc": loc})
        return data
