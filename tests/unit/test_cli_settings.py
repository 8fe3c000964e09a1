"""Every ``tollway`` command reads its flag or its variable, else refuses naming both.

No command falls back to a default address, and every HTTP command follows one base-URL rule
(the gateway's ``.../v1`` base, as in dev.env) and prints the server's own error message.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from tollway.cli import main
from tollway.events.cli_env import api_base, edge_origin, error_message
from tollway.ledger.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Iterator

SETTINGS = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "TOLLWAY_BASE_URL",
    "TOLLWAY_ADMIN_TOKEN",
    "TOLLWAY_API_KEY",
    "TOLLWAY_RESEARCHER_URL",
)
WINDOW = ["--from", "2026-01-01", "--to", "2026-02-01"]
BUDGETS = ["budgets", "list", "--account", "a"]
DB, KAFKA = "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"


@pytest.fixture(autouse=True)
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["ledger", "verify"], {}, (DB, "--database-url")),
        (["ledger", "replay"], {DB: "postgresql://x/y"}, (KAFKA, "--bootstrap")),
        (["ledger", "statement", "--account", "a", *WINDOW], {}, (DB, "--database-url")),
        (["ledger", "balance", "--account", "a"], {}, (DB, "--database-url")),
        (["alerts", "tail"], {}, (KAFKA, "--bootstrap")),
        (["budgets", "list", "--account", "a"], {}, ("TOLLWAY_BASE_URL", "--base-url")),
        (BUDGETS, {"TOLLWAY_BASE_URL": "http://h/v1"}, ("TOLLWAY_ADMIN_TOKEN", "--admin-token")),
        (["research", "list"], {"TOLLWAY_API_KEY": "k"}, ("TOLLWAY_BASE_URL", "--base-url")),
        (
            ["research", "list"],
            {"TOLLWAY_BASE_URL": "http://h/v1"},
            ("TOLLWAY_API_KEY", "--api-key"),
        ),
    ],
)
def test_a_command_without_its_setting_refuses_naming_the_variable_and_the_flag(
    argv: list[str],
    env: dict[str, str],
    named: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert all(name in err for name in named), err
    assert ".tollway/dev.env" in err


@pytest.mark.parametrize(
    "given", ["http://127.0.0.1:8787/v1", "http://127.0.0.1:8787/v1/", "http://127.0.0.1:8787"]
)
def test_one_base_url_rule_accepts_the_sdk_base_or_the_origin(given: str) -> None:
    assert edge_origin(given) == "http://127.0.0.1:8787"
    assert api_base(given) == "http://127.0.0.1:8787/v1"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"message": "no such budget", "param": "budget_id"}},
            "404: no such budget (parameter: budget_id)",
        ),
        ({"type": "error", "error": {"type": "not_found", "message": "gone"}}, "404: gone"),
        ({"status_code": 404, "detail": "Not Found"}, "404: Not Found"),
    ],
)
def test_http_errors_print_the_servers_message(body: dict[str, Any], expected: str) -> None:
    assert error_message(404, json.dumps(body).encode(), "application/json") == expected
    assert error_message(502, b"Bad gateway\n", "text/plain") == "502: Bad gateway"


class _Recorder(BaseHTTPRequestHandler):
    paths: list[str] = []  # noqa: RUF012 - one test's record

    def do_DELETE(self) -> None:
        self.paths.append(self.path)
        body = json.dumps({"error": {"message": "Budget b1 does not exist.", "param": None}})
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def admin_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_budgets_with_the_dev_env_base_url_calls_the_admin_api_and_shows_its_message(
    admin_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOLLWAY_BASE_URL", f"{admin_server}/v1")  # as dev.env writes it
    monkeypatch.setenv("TOLLWAY_ADMIN_TOKEN", "tw-admin-test")

    assert main(["budgets", "rm", "b1"]) == 1

    assert _Recorder.paths == ["/admin/v1/budgets/b1"]
    assert capsys.readouterr().err.strip() == "404: Budget b1 does not exist."


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_rate_is_measured_over_the_phase_not_a_first_instant() -> None:
    clock, out = _Clock(), io.StringIO()
    progress = Progress(out, clock)

    progress("read", 1000, 0)  # the first report, at the very instant the phase began
    clock.now += 4.0
    progress("read", 5000, 5000)
    clock.now += 2.0
    progress("apply", 4000, 5000)  # the next phase began when the last one reported
    progress("apply", 5000, 5000)

    lines = out.getvalue().splitlines()
    assert "ev/s" not in lines[0]
    assert lines[1].endswith(" 1,250 ev/s")
    assert lines[2].endswith(" 2,000 ev/s")
    assert lines[3].endswith(" 2,500 ev/s")
