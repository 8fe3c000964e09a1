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
        estimate = client.post("/research/estimate", json={"topic": "ACME", "mode": "quick"})

        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("route_type_not_allowed", "route_types")
        assert "pool" in error["message"]
        assert '{"error"' not in error["message"]  # the gateway's message, not its JSON
        # The estimate runs the same check: it does not answer for a run that cannot start.
        assert estimate.status_code == 400, estimate.text
        assert estimate.json()["error"]["code"] == "route_type_not_allowed"
        assert "it may use: pool" in estimate.json()["error"]["message"]
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
    assert "expected from the plan (no past runs like it yet)" in shown
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


def test_a_cap_that_cannot_pay_for_one_call_is_refused_naming_what_one_call_needs(
    gateway, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    body: dict[str, Any] = {"topic": "ACME", "mode": "deep"}
    with _client(gateway, tenant.api_key) as client:
        first = client.post("/research/estimate", json=body).json()["estimate"]
        one_call = first["first_call_micro"]["credit"]
        too_small = {**body, "cap": {"credit": f"{(one_call - 1) / 1_000_000:.6f}"}}
        enough = {**body, "cap": {"credit": f"{one_call / 1_000_000:.6f}"}}

        refused_estimate = client.post("/research/estimate", json=too_small)
        refused_start = client.post("/research", json=too_small)
        accepted = client.post("/research/estimate", json=enough)

        assert 0 < one_call < first["buckets"][0]["high_micro"]
        for refused in (refused_estimate, refused_start):
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["param"]) == ("cap_below_one_call", "cap.credit")
            assert f"up to {one_call / 1_000_000:.6f}" in error["message"]
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["envelope_micro"] == {"credit": one_call}
        assert client.get("/research").json()["data"] == []
        assert _nothing_spent(client)


def test_the_estimate_is_calibrated_from_the_accounts_completed_runs(
    gateway, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    body = {"topic": "ACME", "mode": "quick"}
    with _client(gateway, tenant.api_key) as client:
        before = client.post("/research/estimate", json=body).json()["estimate"]
        tokens = []
        for _ in range(3):
            run = client.post("/research", json=body).json()
            done = wait_for(
                lambda run=run: client.get(f"/research/{run['id']}").json()["finished_at"],
                timeout=120,
            )
            assert done
            calls = client.get(f"/research/{run['id']}/receipt").json()["calls"]
            tokens.append(sum(c["input_tokens"] + c["output_tokens"] for c in calls))
        after = client.post("/research/estimate", json=body).json()["estimate"]

    assert (before["basis"], before["expected"]["history_runs"]) == ("static", 0)
    assert (
        before["expected"]["tokens"]["p90"] == before["input_tokens"] + before["max_output_tokens"]
    )
    assert (after["basis"], after["expected"]["history_runs"]) == ("history", 3)
    assert after["expected"]["tokens"] == {"p50": sorted(tokens)[1], "p90": max(tokens)}
    assert after["expected"]["calls"] == {"p50": 3, "p90": 3}
    assert after["expected"]["duration_seconds"]["p50"] > 0
    # The envelope stays the plan's worst case: calibration never shrinks what a run may hold.
    assert after["buckets"] == before["buckets"]
