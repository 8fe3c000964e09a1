"""The demo upstream: a fake AI provider, so the dev stack, tests and benchmarks stay offline.

It stands in for OpenAI and Anthropic wherever the gateway would call them.

One process serves several channels, each a base URL ``http://host:port/<channel>/v1`` speaking
both OpenAI (chat completions, embeddings, models) and Anthropic (messages), streaming or not.
Answers are deterministic functions of model and messages, usage included; a ``/_control/`` API
arms faults (error statuses, 429s, hangs, cut streams, missing usage), counts requests and sets
latency. ``create_app`` builds the ASGI app for in-process use; ``main`` serves it with uvicorn.
"""

from tollway.devstack.upstream.app import DEFAULT_CHANNELS, DemoUpstream, create_app
from tollway.devstack.upstream.cli import main
from tollway.devstack.upstream.state import FaultKind
from tollway.devstack.upstream.wire import UpstreamCutError

__all__ = [
    "DEFAULT_CHANNELS",
    "DemoUpstream",
    "FaultKind",
    "UpstreamCutError",
    "create_app",
    "main",
]
