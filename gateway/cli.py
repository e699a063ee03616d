"""`turnout` command line: serve the gateway, check a config, and mount the command groups other
modules own (`models`, `engine`, `router`, `drafters`, `vllm-args`, `keys`).

Every handler returns the process exit code. Mounted modules never import this one: what they share
with `turnout serve` (running the app, reading TURNOUT_CONFIG) is in gateway/serve.py.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from gateway.config import ConfigError, load_config, summarize
from gateway.extras import engine_hint
from gateway.serve import CONFIG_ENV, load_configured, run_server

# Command groups other modules own (module → the command it adds); each exposes `register(subparsers)`.
# gateway.router_label adds `router label` to the group router_models.cli makes, and gateway.shadow_read
# lets its train and eval read the redis shadow sink, so both come after it.
_MOUNTED = {"engine.cli": "models", "gateway.engine_server": "engine", "router_models.cli": "router",
            "gateway.router_label": "router label", "gateway.shadow_read": "router --data redis://",
            "drafters.cli": "drafters", "gateway.vllm_args": "vllm-args", "gateway.keys_cli": "keys"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ModuleNotFoundError as error:  # e.g. `turnout models pull` where only the gateway is installed
        hint = engine_hint(error, f"`turnout {args.command}`")
        if hint is None:
            raise
        print(f"turnout: error: {hint}", file=sys.stderr)
        return 1


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
        config = load_configured(args.config)
    except ConfigError as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1
    server = config.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port))
                                              if v is not None})
    return run_server(config.model_copy(update={"server": server}), log_level=args.log_level)


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, os.environ)
    except ConfigError as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    print(summarize(config))
    return 0


def _mount(module_name: str, command: str, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
