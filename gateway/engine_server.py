"""`turnout engine serve`: one embedded model as a standalone OpenAI-compatible server.

Not a second API: it runs the gateway's own app with a config of a single embedded deployment
(router off, no cache), so it can stand in for vLLM behind another gateway. Command and server live
here together: the engine package below never reaches up into the gateway to start one.
"""

from __future__ import annotations

import argparse
from typing import get_args

from engine.types import DEFAULT_PREFIX_CACHE_MB, DEFAULT_WEIGHTS, WeightFormat
from gateway.config import DeploymentConfig, RoutingConfig, ServerConfig, TierConfig, TurnoutConfig
from gateway.serve import run_server


def engine_config(model: str, *, host: str = "127.0.0.1", port: int = 8001, max_batch_size: int = 8,
                  max_waiting: int = 64, prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB,
                  threads: int | None = None, weights: WeightFormat = DEFAULT_WEIGHTS) -> TurnoutConfig:
    deployment = DeploymentConfig(kind="embedded", model=model, max_batch_size=max_batch_size,
                                  max_waiting=max_waiting, prefix_cache_mb=prefix_cache_mb, threads=threads,
                                  weights=weights)
    return TurnoutConfig(server=ServerConfig(host=host, port=port),
                         tiers={"small": TierConfig(deployments=[deployment])},
                         routing=RoutingConfig(router="none"))


def serve(args: argparse.Namespace) -> int:
    """Run one model behind the standalone OpenAI-compatible engine server."""
    config = engine_config(args.model, host=args.host, port=args.port,
                           max_batch_size=getattr(args, "max_batch_size", 8),
                           max_waiting=getattr(args, "max_waiting", 64),
                           prefix_cache_mb=getattr(args, "prefix_cache_mb", DEFAULT_PREFIX_CACHE_MB),
                           threads=getattr(args, "threads", None),
                           weights=getattr(args, "weights", DEFAULT_WEIGHTS))
    return run_server(config, log_level=getattr(args, "log_level", "info"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `engine` command group to the top-level `turnout` parser."""
    engine = subparsers.add_parser("engine", help="run the embedded inference engine on its own")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True)
    command = engine_commands.add_parser("serve", help=serve.__doc__)
    command.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", metavar="NAME",
                         help="built-in name, model dir, .gguf file or HF repo id")
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8001)
    command.add_argument("--max-batch-size", type=int, default=8)
    command.add_argument("--prefix-cache-mb", type=float, default=DEFAULT_PREFIX_CACHE_MB,
                         help="memory for reusable prompt KV, per tenant / cache_salt (0: off)")
    command.add_argument("--threads", type=int, default=None,
                         help="torch threads per step (default: all cores this process may use)")
    command.add_argument("--weights", choices=get_args(WeightFormat), default=DEFAULT_WEIGHTS,
                         help="weight format the engine computes on (int8: converted once in the model store)")
    command.set_defaults(func=serve)
