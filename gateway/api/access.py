"""The API-key dependency of the /v1 endpoints, and /v1/usage: what the calling key has used and saved."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Caller, describe
from gateway.errors import APIError
from gateway.governance import Governance
from gateway.state_store import StateUnavailable

if TYPE_CHECKING:
    from gateway.runtime import Runtime

router = APIRouter()


async def _authenticate(request: Request) -> Caller:
    """401 / 503 in OpenAI's shape before the body is even validated, as OpenAI does."""
    return await governance(request).auth.authenticate(request.headers.get("authorization"))


Authenticated = Annotated[Caller, Depends(_authenticate)]


@router.get("/v1/usage")
async def usage(caller: Authenticated, request: Request) -> dict[str, Any]:
    """The calling key's requests, tokens by tier and model, cache hits, cost and savings (USD, from
    `pricing:`). An admin key (or anyone, with auth off) sees every key and the total."""
    ledger = governance(request).ledger
    try:
        if caller.admin:
            accounts, total = await ledger.report_all()
            return {"object": "usage", "scope": "all", **total,
                    "keys": [{"id": account, **report} for account, report in accounts.items()]}
        assert caller.key is not None
        return {"object": "usage", "scope": "key", "key": describe(caller.key),
                **await ledger.report(caller.account)}
    except StateUnavailable:
        raise APIError(503, "Usage is kept in Redis, which is unreachable right now; retry shortly.",
                       code="usage_unavailable") from None


def runtime(request: Request) -> Runtime:
    """The app's composition root (api/app.py puts it on the app state, which starlette types as Any)."""
    root: Runtime = request.app.state.runtime
    return root


def governance(request: Request) -> Governance:
    return runtime(request).governance
