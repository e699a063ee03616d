"""Run the gateway app: the one way `turnout serve` and `turnout engine serve` run it, and the one place
that reads TURNOUT_CONFIG.

Its own module so that the command groups which serve or read the config (gateway/engine_server.py,
gateway/vllm_args.py) import it directly instead of reaching back into gateway/cli.py, which mounts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.config import TurnoutConfig, load_config, summarize

if TYPE_CHECKING:
    import uvicorn

    from gateway.health import Readiness

CONFIG_ENV = "TURNOUT_CONFIG"


def load_configured(path: str | None) -> TurnoutConfig:
    """`path`, else $TURNOUT_CONFIG, else the built-in config; raises ConfigError."""
    return load_config(path or os.environ.get(CONFIG_ENV) or None, os.environ)


def run_server(config: TurnoutConfig, *, log_level: str = "info") -> int:
    """Shared by `turnout serve` and `turnout engine serve`: one app, one way to run it."""
    import uvicorn

    from gateway.api import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    servers: list[uvicorn.Server] = []  # the printer asks the server that serves the app it is built into
    try:
        app = create_app(config, on_ready=_ready_line_printer(lambda: bool(servers and servers[0].started), config))
    except ValueError as error:
        print(f"turnout: error: {error}", file=sys.stderr)
        return 1
    logging.getLogger("turnout").info("config:\n%s", summarize(config))
    servers.append(uvicorn.Server(uvicorn.Config(app, host=config.server.host, port=config.server.port,
                                                 log_level=log_level, timeout_graceful_shutdown=5)))
    servers[0].run()
    return 0


def _ready_line_printer(listening: Callable[[], bool], config: TurnoutConfig) -> Callable[[Readiness], Awaitable[None]]:
    """Uvicorn's "running on …" only means the socket is open; models may load for minutes after it.
    This prints one line on stdout when a request would actually be served: /ready is 200 and
    the socket is listening, whichever comes last."""
    async def print_ready(readiness: Readiness) -> None:
        while not listening():
            await asyncio.sleep(0.05)
        url = f"http://{config.server.host}:{config.server.port}"
        print(ready_line(url, readiness), flush=True)

    return print_ready


def ready_line(url: str, readiness: Readiness) -> str:
    """`turnout ready: serving URL/v1 (small-0: MODEL, large-0: MODEL up; /ready is 200)`."""
    up = ", ".join(f"{name}: {state.get('model')}" for name, state in readiness.deployments.items()
                   if state.get("up"))
    return f"turnout ready: serving {url}/v1 ({up or 'no deployments'} up; /ready is 200)"
