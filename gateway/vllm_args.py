"""`turnout vllm-args TIER`: the `vllm serve` command for each of a tier's deployments, derived from
the same turnout.yaml the gateway runs with — so the name vLLM serves, its port, its context length
and its speculative config cannot drift from what the gateway sends and assumes.

compose.yaml and deploy/k8s/ hold the output (the vllm/vllm-openai image's entrypoint is already
`vllm serve`, so their `command:`/`args:` is this list minus its first two words); tests check that
they still match.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from urllib.parse import urlsplit

from drafters.vllm import vllm_serve_args
from gateway.config import ConfigError, DeploymentConfig, TurnoutConfig
from gateway.serve import load_configured

DEFAULT_PORT = 8000
SERVE_PREFIX = ("vllm", "serve")


def deployment_serve_args(deployment: DeploymentConfig) -> list[str]:
    """`vllm serve` argv for one deployment: HF repo for a built-in model name, the configured model
    id as the served name, the URL's port, `--max-model-len` from `context_length`, the speculative
    config as vLLM JSON, then the deployment's `extra_args` (parallelism, memory, …)."""
    port = (urlsplit(deployment.url).port if deployment.url else None) or DEFAULT_PORT
    extra = [f"--max-model-len={deployment.context_length}"] if deployment.context_length else []
    return vllm_serve_args(deployment.model, deployment.speculative, port=port,
                           served_name=deployment.model, extra=extra + deployment.extra_args)


def tier_serve_args(config: TurnoutConfig, tier: str) -> dict[str, list[str]]:
    """Deployment name → argv, for the tier's deployments vLLM can serve (not litellm's)."""
    if tier not in config.tiers:
        raise ValueError(f"tier {tier} is not configured (configured: {', '.join(config.tiers)})")
    return {deployment.name or f"{tier}-{index}": deployment_serve_args(deployment)
            for index, deployment in enumerate(config.tiers[tier].deployments)
            if deployment.kind != "litellm"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("vllm-args", help="print the `vllm serve` command for a tier's deployments")
    parser.add_argument("tier", choices=["small", "large"])
    parser.add_argument("--config", metavar="FILE", help="turnout.yaml (default: $TURNOUT_CONFIG, else built-in)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON array per deployment, without `vllm serve` (for compose/k8s args)")
    parser.set_defaults(func=print_serve_args)


def print_serve_args(args: argparse.Namespace) -> int:
    try:
        config = load_configured(args.config)
        commands = tier_serve_args(config, args.tier)
    except (ConfigError, ValueError) as error:
        print(f"turnout: {error}", file=sys.stderr)
        return 1
    if not commands:
        print(f"turnout: tier {args.tier} has no deployment vLLM can serve", file=sys.stderr)
        return 1
    for name, argv in commands.items():
        if args.json:
            print(json.dumps(argv[len(SERVE_PREFIX):]))
        else:
            print(f"# {name}\n{shlex.join(argv)}")
    return 0
