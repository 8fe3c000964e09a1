"""Research at the gateway's base URL, and refusals before anything is spent.

Clients call ``$BASE/v1/research…`` on the edge like every other API; the edge forwards to the
researcher with the caller's key. A topic the data source has nothing on, or a key that may not
use the run's route types, is refused with a 4xx that says why, and nothing is spent.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tollway.cli import main

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(stack: Any) -> str:
    stack.wait_healthy(f"http://127.0.0.1:{stack.config.researcher_port}/healthz", "researcher")
    return f"{stack.edge_url}/v1"


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, headers={"authorization": f"Bearer {key}"})


def _nothing_spent(client: httpx.Client) -> bool:
    buckets = client.get("/balance").json()["buckets"]
    tasks = client.get("/tasks").json()["data"]
    return all(b["held_micro"] == 0 for b in buckets) and tasks == []


def test_research_runs_through_the_gateways_base_url(gateway, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    with _client(gateway, tenant.api_key) as client:
        started = client.post("/research", json={"topic": "Is ACME a buy?", "mode": "quick"})
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        events = client.get(f"/research/{run_id}/events", timeout=120)
        listed = client.get("/research").json()["data"]
        run = wait_for(
            lambda: (r := client.get(f"/research/{run_id}").json())["status"] != "running" and r,
            timeout=60,
            what="the run to end",
        )
        report = client.get(f"/research/{run_id}/report.pdf")

    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: finished" in events.text
    assert run_id in [r["id"] for r in listed]
    assert run["status"] == "completed", run
    assert report.status_code == 200
    assert report.content.startswith(b"%PDF")


def test_a_topic_the_data_source_lacks_is_refused_listing_what_it_has(
    gateway, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with _client(gateway, tenant.api_key) as client:
        refused = client.post("/research", json={"topic": "Is Apple a buy?", "mode": "quick"})

        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("unknown_topic", "topic")
        assert "ACME, GLOBX, NOVA" in error["message"]
        assert _nothing_spent(client)


def test_a_key_that_may_not_use_the_runs_route_types_gets_a_clear_400(
    gateway, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10", "wallet": "10"}, route_types=("pool",))
    with _client(gateway, tenant.api_key) as client:
        refused = client.post("/research", json={"topic": "ACME", "mode": "quick"})

        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("route_type_not_allowed", "route_types")
        assert "pool" in error["message"]
        assert '{"error"' not in error["message"]  # the gateway's message, not its JSON
        assert _nothing_spent(client)


def test_research_without_a_key_is_a_401_at_the_gateway(gateway) -> None:
    response = httpx.get(f"{gateway}/research")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_an_estimate_runs_every_check_and_starts_nothing(gateway, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    body = {"topic": "Is NOVA a buy?", "mode": "standard"}
    with _client(gateway, tenant.api_key) as client:
        estimate = client.post("/research/estimate", json=body)
        unknown = client.post("/research/estimate", json={"topic": "Is Apple a buy?"})

        assert estimate.status_code == 200, estimate.text
        found = estimate.json()
        assert (found["object"], found["tickers"], found["mode"]) == (
            "research.estimate",
            ["NOVA"],
            "standard",
        )
        assert found["estimate"]["calls"] > 0
        assert found["estimate"]["buckets"][0]["high_micro"] > 0
        assert found["estimate"]["duration_seconds"] > 0
        assert unknown.status_code == 400
        assert client.get("/research").json()["data"] == []
        assert _nothing_spent(client)


def test_the_cli_shows_the_estimate_and_starts_only_when_confirmed(
    stack, gateway, tenant_factory, capsys, monkeypatch
) -> None:
    tenant = tenant_factory({"credit": "10"})
    monkeypatch.setenv("TOLLWAY_BASE_URL", gateway)
    monkeypatch.setenv("TOLLWAY_API_KEY", tenant.api_key)

    estimated = main(["research", "estimate", "--topic", "ACME", "--mode", "quick"])
    shown = capsys.readouterr().err
    unconfirmed = main(["research", "run", "--topic", "ACME", "--mode", "quick"])  # no terminal
    refused = capsys.readouterr().err

    assert estimated == 0
    assert shown.startswith("estimate (quick, ACME): 3 calls, up to ")
    assert "cost credit " in shown
    assert unconfirmed == 3
    assert "pass --yes" in refused
    with _client(gateway, tenant.api_key) as client:
        assert client.get("/research").json()["data"] == []


def test_a_key_that_may_not_call_a_model_of_the_plan_is_refused_before_any_spend(
    gateway, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"}, allowed_models=["claude-3-5-haiku"])
    with _client(gateway, tenant.api_key) as client:
        refused = client.post("/research", json={"topic": "ACME", "mode": "quick"})

        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_allowed", "models")
        assert "may not call gpt-4o-mini" in error["message"]
        assert _nothing_spent(client)
