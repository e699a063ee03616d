"""`turnout engine serve`: one embedded model as a standalone OpenAI-compatible server.

Not a second API: it runs the gateway's own app with a config of a single embedded deployment
(router off, no cache), so it can stand in for vLLM behind another gateway.
"""

from __future__ import annotations

import argparse

from engine.types import DEFAULT_PREFIX_CACHE_MB
from gateway.config import DeploymentConfig, RoutingConfig, ServerConfig, TierConfig, TurnoutConfig


def engine_config(model: str, *, host: str = "127.0.0.1", port: int = 8001, max_batch_size: int = 8,
                  max_waiting: int = 64, prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB,
                  threads: int | None = None) -> TurnoutConfig:
    deployment = DeploymentConfig(kind="embedded", model=model, max_batch_size=max_batch_size,
                                  max_waiting=max_waiting, prefix_cache_mb=prefix_cache_mb, threads=threads)
    return TurnoutConfig(server=ServerConfig(host=host, port=port),
                         tiers={"small": TierConfig(deployments=[deployment])},
                         routing=RoutingConfig(router="none"))


def serve(args: argparse.Namespace) -> int:
    from gateway.cli import run_server

    config = engine_config(args.model, host=args.host, port=args.port,
                           max_batch_size=getattr(args, "max_batch_size", 8),
                           max_waiting=getattr(args, "max_waiting", 64),
                           prefix_cache_mb=getattr(args, "prefix_cache_mb", DEFAULT_PREFIX_CACHE_MB),
                           threads=getattr(args, "threads", None))
    return run_server(config, log_level=getattr(args, "log_level", "info"))
