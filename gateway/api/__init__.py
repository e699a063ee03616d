"""HTTP layer: the OpenAI-compatible API over the pipeline."""

from gateway.api.app import create_app

__all__ = ["create_app"]
