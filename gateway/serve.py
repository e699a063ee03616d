"""Run the gateway app: the one way `turnout serve` and `turnout engine serve` run it, and the one place
that reads TURNOUT_CONFIG.

Its own module so that the command groups which serve or read the config (gateway/engine_server.py,
gateway/vllm_args.py) import it directly instead of reaching back into gateway/cli.py, which mounts them.
"""

from __future__ import annotations

import logging
import os
import sys

from gateway.config import TurnoutConfig, load_config, summarize

CONFIG_ENV = "TURNOUT_CONFIG"


def load_configured(path: str | None) -> TurnoutConfig:
    """`path`, else $TURNOUT_CONFIG, else the built-in config; raises ConfigError."""
    return load_config(path or os.environ.get(CONFIG_ENV) or None, os.environ)


def run_server(config: TurnoutConfig, *, log_level: str = "info") -> int:
    """Build the app from `config` and run uvicorn until interrupted; the process exit code."""
    import uvicorn

    from gateway.api import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(config)
    except ValueError as error:
        print(f"turnout: error: {error}", file=sys.stderr)
        return 1
    logging.getLogger("turnout").info("config:\n%s", summarize(config))
    uvicorn.run(app, host=config.server.host, port=config.server.port, log_level=log_level,
                timeout_graceful_shutdown=5)
    return 0
