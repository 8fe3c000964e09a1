"""What every ``tollway`` command reads: a flag, else an environment variable, else a refusal.

No command falls back to a default address: a CLI that silently tried ``127.0.0.1:<port>``
could act on another stack running on the same machine. ``make dev`` writes every variable
below to ``.tollway/dev.env``.

One base-URL rule for every command: ``TOLLWAY_BASE_URL`` (``--base-url``) is the gateway's
base URL exactly as the OpenAI SDK takes it (``http://host:port/v1``); a command that calls
the admin API (``/admin/v1/...``) or the dashboard derives the edge's origin from it by
dropping the trailing ``/v1``. ``http://host:port`` is accepted too.

This module imports nothing beyond the standard library: it runs on every ``--help``.
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_FILE_HINT = (
    "`make dev` writes it to .tollway/dev.env (load it with: set -a; . .tollway/dev.env; set +a)"
)


class MissingSettingError(Exception):
    """A command needs a setting that neither its flag nor the environment gives."""

    def __init__(self, env: str, flag: str) -> None:
        """Name both ways of giving it."""
        super().__init__(f"Set {env} or pass {flag}: {ENV_FILE_HINT}.")


def required(value: str | None, env: str, flag: str) -> str:
    """``value`` (the flag, defaulting to ``$env``), or refuse naming both."""
    if not value:
        raise MissingSettingError(env, flag)
    return value


def from_env(name: str) -> str | None:
    """The variable's value, or None when unset or empty (an argparse default)."""
    return os.environ.get(name) or None


def edge_origin(base_url: str) -> str:
    """``http://host:port`` from ``http://host:port/v1`` (or from the origin itself)."""
    origin = base_url.rstrip("/")
    return origin.removesuffix("/v1")


def api_base(base_url: str) -> str:
    """``http://host:port/v1`` from either form: the client API's base."""
    return edge_origin(base_url) + "/v1"


def error_message(status: int, body: bytes, content_type: str = "") -> str:
    """``"<status>: <the server's message>"`` from any error body a Tollway server answers.

    OpenAI's ``{"error": {"message", "param"}}``, Anthropic's ``{"type": "error", "error":
    {...}}``, a framework's ``{"detail": ...}``, or plain text.
    """
    text = body.decode(errors="replace").strip()
    found: Any = None
    if "json" in content_type or text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            found = None
    message = text or "(no body)"
    param = ""
    if isinstance(found, dict):
        error = found.get("error")
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
            param = f" (parameter: {error['param']})" if error.get("param") else ""
        elif isinstance(error, str):
            message = error
        elif found.get("detail"):
            message = str(found["detail"])
    return f"{status}: {message}{param}"
