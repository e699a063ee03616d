"""Parse request bodies that are not valid UTF-8 into text the schema can point at.

`json.loads` of such bytes raises UnicodeDecodeError, which FastAPI answers with an anonymous
"There was an error parsing the body". Decoding the bad bytes with `surrogateescape` instead turns
each into a lone surrogate inside the string that held it, so the request schema's Unicode check
(gateway/text.py) refuses it as `invalid_value` naming the field, like a `\\ud800` escape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class LenientJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except UnicodeDecodeError:
                self._json = json.loads(body.decode("utf-8", "surrogateescape"))
        return self._json


class LenientJSONRoute(APIRoute):
    """An APIRoute whose endpoints parse their JSON bodies with `LenientJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lenient(request: Request) -> Response:
            return await handler(LenientJSONRequest(request.scope, request.receive))

        return lenient
