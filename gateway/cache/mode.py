"""Per-request cache mode from HTTP headers, so clients can opt out without a config change.

- `Cache-Control: no-cache` (or `Pragma: no-cache`, `x-turnout-cache: bypass`): don't answer from the
  cache, but store the fresh response ("bypass": a refresh).
- `Cache-Control: no-store` (or `x-turnout-cache: no-store`): neither read nor write ("no-store").
- otherwise "use".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

CacheMode = Literal["use", "bypass", "no-store"]


def _directives(value: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in value.split(",") if part.strip()}


def cache_mode_from_headers(headers: Mapping[str, str]) -> CacheMode:
    """`headers` may be any mapping (Starlette's Headers, a dict): names are matched case-insensitively."""
    lowered = {name.lower(): value for name, value in headers.items()}
    directives = _directives(lowered.get("cache-control", "")) | _directives(lowered.get("pragma", ""))
    turnout = lowered.get("x-turnout-cache", "").strip().lower()
    if "no-store" in directives or turnout == "no-store":
        return "no-store"
    if "no-cache" in directives or turnout in ("bypass", "no-cache", "refresh"):
        return "bypass"
    return "use"
