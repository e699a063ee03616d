"""`turnout` command line: serve the gateway, check a config, and mount the engine's and the
router's command groups (`models`, `engine`, `router`).

Every handler returns the process exit code. This is the one place that reads TURNOUT_CONFIG.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from gateway.config import ConfigError, TurnoutConfig, load_config, summarize

if TYPE_CHECKING:
    import uvicorn

    from gateway.health import Readiness

CONFIG_ENV = "TURNOUT_CONFIG"
# Command groups other packages own (module → the command it adds); each exposes `register(subparsers)`.
_MOUNTED = {"engine.cli": "models/engine", "router_models.cli": "router", "drafters.cli": "drafters",
            "gateway.vllm_args": "vllm-args", "gateway.keys_cli": "keys"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="OpenAI-compatible LLM gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", metavar="FILE",
                       help=f"turnout.yaml (default: ${CONFIG_ENV}, else the built-in config)")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=serve_gateway)

    config = commands.add_parser("config", help="inspect configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser("check", help="validate a config file and summarize it")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_config)

    for module_name, command in _MOUNTED.items():
        _mount(module_name, command, commands)
    return parser


def serve_gateway(args: argparse.Namespace) -> int:
    """Load the config (file, $TURNOUT_CONFIG, or built-in), then run uvicorn until interrupted."""
    try:
        config = load_config(args.config or os.environ.get(CONFIG_ENV) or None, os.environ)
    except ConfigError as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1
    server = config.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port))
                                              if v is not None})
    return run_server(config.model_copy(update={"server": server}), log_level=args.log_level)


def run_server(config: TurnoutConfig, *, log_level: str = "info") -> int:
    """Shared by `turnout serve` and `turnout engine serve`: one app, one way to run it."""
    import uvicorn

    from gateway.api import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(config)
    except ValueError as error:
        print(f"turnout: error: {error}", file=sys.stderr)
        return 1
    logging.getLogger("turnout").info("config:\n%s", summarize(config))
    server = uvicorn.Server(uvicorn.Config(app, host=config.server.host, port=config.server.port,
                                           log_level=log_level, timeout_graceful_shutdown=5))
    app.state.runtime.on_ready = _ready_line_printer(server, config)
    server.run()
    return 0


def _ready_line_printer(server: uvicorn.Server, config: TurnoutConfig) -> Callable[[Readiness], Awaitable[None]]:
    """Uvicorn's "running on …" only means the socket is open; models may load for minutes after it.
    This prints one line on stdout when a request would actually be served: /ready is 200 and
    the socket is listening, whichever comes last."""
    async def print_ready(readiness: Readiness) -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        url = f"http://{config.server.host}:{config.server.port}"
        print(ready_line(url, readiness), flush=True)

    return print_ready


def ready_line(url: str, readiness: Readiness) -> str:
    """`turnout ready: serving URL/v1 (small-0: MODEL, large-0: MODEL up; /ready is 200)`."""
    up = ", ".join(f"{name}: {state.get('model')}" for name, state in readiness.deployments.items()
                   if state.get("up"))
    return f"turnout ready: serving {url}/v1 ({up or 'no deployments'} up; /ready is 200)"


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, os.environ)
    except ConfigError as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    print(summarize(config))
    return 0


def _mount(module_name: str, command: str, commands: argparse._SubParsersAction) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        # Guard until that package's CLI lands: the command exists and says why it does nothing.
        placeholder = commands.add_parser(command.split("/")[0], help=f"(unavailable: {module_name} missing)")
        placeholder.set_defaults(func=lambda _: _unavailable(module_name))
        return
    module.register(commands)


def _unavailable(module_name: str) -> int:
    print(f"turnout: error: this command needs {module_name}, which is not in this build yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
