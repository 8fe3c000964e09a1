"""``tollway --help`` and each sub-command's ``--help`` start at once: they import no service code.

Counted, not timed (a timed test fails on a busy machine): each command runs in a fresh
interpreter, which then reports every module it holds. bench/cli_startup.py measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What a --help must never pull in: the HTTP, database and Kafka clients, pydantic, the services.
HEAVY = ("httpx", "asyncpg", "aiokafka", "pydantic", "orjson", "litestar", "structlog", "anyio")
LIGHT_TOLLWAY = {"tollway", "tollway.cli", "tollway.events", "tollway.events.cli_env"}
# A bare interpreter holds ~30 modules; argparse and its imports ~50 more.
MAX_MODULES = 120

REPORT = """
import json, sys
from tollway.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def _modules(*argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", REPORT, *argv], capture_output=True, text=True, check=False
    )
    assert "usage: tollway" in done.stdout, done.stdout + done.stderr
    found: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return found


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_top_level_help_imports_no_service() -> None:
    modules = _modules("--help")
    assert not _heavy(modules)
    assert {m for m in modules if m.startswith("tollway")} == LIGHT_TOLLWAY
    assert len(modules) < MAX_MODULES, len(modules)


@pytest.mark.parametrize(
    ("argv", "service"),
    [
        (("ledger", "--help"), "ledger"),
        (("ledger", "verify", "--help"), "ledger"),
        (("ledger", "statement", "--help"), "ledger"),
        (("ledger", "rerate", "--help"), "ledger"),
        (("alerts", "--help"), "limits"),
        (("alerts", "tail", "--help"), "limits"),
        (("budgets", "--help"), "edge"),
        (("budgets", "set", "--help"), "edge"),
        (("recon", "--help"), "edge"),
        (("recon", "import", "--help"), "edge"),
        (("recon", "drift", "--help"), "edge"),
        (("research", "--help"), "researcher"),
        (("research", "run", "--help"), "researcher"),
        (("secrets", "--help"), "router"),
        (("secrets", "rotate", "--help"), "router"),
    ],
)
def test_a_subcommand_help_imports_only_its_own_cli_module(
    argv: tuple[str, ...], service: str
) -> None:
    modules = _modules(*argv)
    assert not _heavy(modules)
    own = {
        f"tollway.{service}",
        f"tollway.{service}.cli",
        f"tollway.{service}.recon_cli",
        "tollway.events.topics",
    }
    assert {m for m in modules if m.startswith("tollway")} <= LIGHT_TOLLWAY | own
    assert len(modules) < MAX_MODULES, len(modules)
