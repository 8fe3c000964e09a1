"""Research runs end to end: the researcher calls the edge with the user's key inside a task
envelope, against the demo upstream, and its receipt equals the ledger's charges."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pypdf
import pytest

from tests.conftest import upstream_calls, wait_for
from tollway.cli import main
from tollway.researcher import indicators
from tollway.researcher.market import CsvDataSource

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def researcher(stack: Any) -> str:
    url = f"http://127.0.0.1:{stack.config.researcher_port}"
    stack.wait_healthy(f"{url}/healthz", "researcher")
    return url


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"})


def _finished(client: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = client.get(f"/v1/research/{run_id}").json()
    return run if run["status"] != "running" else None


def _balance(stack: Any, key: str) -> dict[str, dict[str, int]]:
    response = httpx.get(f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {key}"})
    return {b["bucket"]: b for b in response.json()["buckets"]}


def _run(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/research", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


def _assert_receipt_equals_ledger(stack: Any, key: str, client: httpx.Client, run_id: str) -> Any:
    receipt = client.get(f"/v1/research/{run_id}/receipt").json()
    ledger = httpx.get(
        f"{stack.edge_url}/v1/tasks/{receipt['task_id']}",
        headers={"authorization": f"Bearer {key}"},
    ).json()
    mine = {b: v["charged_micro"] for b, v in receipt["totals"].items()}
    assert mine == {b: v["charged_micro"] for b, v in ledger["cost"].items()}
    assert sum(c["charged_micro"] for c in receipt["calls"]) == sum(mine.values())
    assert receipt["matches_ledger"] is True
    assert ledger["calls"] == len(receipt["calls"])
    return receipt


def test_quick_run_reports_computed_figures_and_its_receipt_equals_the_ledger(
    stack, researcher, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="Is ACME a buy?", mode="quick")
        assert run["tickers"] == ["ACME"]
        [bucket] = run["estimate"]["buckets"]
        assert bucket["bucket"] == "credit"
        assert 0 < bucket["low_micro"] < bucket["high_micro"] == run["envelope_micro"]["credit"]
        done = wait_for(
            lambda: _finished(client, run["id"]), timeout=120, what="the quick run to finish"
        )
        assert done["status"] == "completed", done["error"]

        receipt = _assert_receipt_equals_ledger(stack, tenant.api_key, client, run["id"])
        assert len(receipt["calls"]) == run["estimate"]["calls"] == 3
        for call in receipt["calls"]:
            assert call["status"] == "settled"
            assert call["channel"] == "openai-direct"
            assert call["upstream_model"] == "gpt-4o-mini-2024-07-18"
            assert call["output_tokens"] > 0
        charged = receipt["totals"]["credit"]["charged_micro"]
        assert charged <= bucket["high_micro"]
        credit = _balance(stack, tenant.api_key)["credit"]
        assert credit["held_micro"] == 0
        assert credit["available_micro"] == 10_000_000 - charged

        figures = indicators.compute("ACME", CsvDataSource().bars("ACME"))
        markdown = client.get(f"/v1/research/{run['id']}/report.md").text
        pdf = client.get(f"/v1/research/{run['id']}/report.pdf")
        assert pdf.headers["content-type"] == "application/pdf"
        text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
        for _label, value in figures.rows()[1:]:
            assert value in markdown
            assert value in text
        chart = client.get(f"/v1/research/{run['id']}/chart.png").content
        assert chart.startswith(b"\x89PNG")

        history = client.get("/v1/research").json()["data"]
        assert [h["id"] for h in history] == [run["id"]]


def test_deep_run_uses_both_tiers_and_its_receipt_equals_the_ledger(
    stack, researcher, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="Compare ACME, GLOBX and NOVA", mode="deep")
        assert run["tickers"] == ["ACME", "GLOBX", "NOVA"]
        done = wait_for(
            lambda: _finished(client, run["id"]), timeout=180, what="the deep run to finish"
        )
        assert done["status"] == "completed", done["error"]
        receipt = _assert_receipt_equals_ledger(stack, tenant.api_key, client, run["id"])
        assert len(receipt["calls"]) == run["estimate"]["calls"] == 13
        assert {c["upstream_model"] for c in receipt["calls"]} == {
            "gpt-4o-mini-2024-07-18",
            "claude-3-5-haiku-20241022",
        }
        assert _balance(stack, tenant.api_key)["credit"]["held_micro"] == 0


def test_progress_streams_stages_calls_and_spend_until_the_end(
    stack, researcher, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="NOVA momentum", mode="quick")
        events: list[tuple[str, str]] = []
        with client.stream("GET", f"/v1/research/{run['id']}/events") as stream:
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    events.append((kind, line.partition(":")[2].strip()))
    kinds = [k for k, _ in events]
    assert kinds[0] == "planned"
    assert kinds.count("call_finished") == 3
    assert kinds[-1] == "finished"
    assert '"stage":"researching"' in "".join(d for _, d in events)
    last_call = [d for k, d in events if k == "call_finished"][-1]
    assert '"calls":3' in last_call
    assert '"spent_micro":{"credit":' in last_call


def test_insufficient_balance_refuses_before_any_call(
    stack, researcher, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "0.000100"})
    before = upstream_calls(upstream)
    with _client(researcher, tenant.api_key) as client:
        response = client.post("/v1/research", json={"topic": "ACME", "mode": "deep"})
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "insufficient_balance"
        assert "credit" in error["message"]
        assert "cap" in error["message"]
        assert client.get("/v1/research").json()["data"] == []
    assert upstream_calls(upstream) == before


def test_a_lower_cap_starts_the_run_and_the_envelope_stops_it(
    stack, researcher, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "0.010000"})
    with _client(researcher, tenant.api_key) as client:
        refused = client.post("/v1/research", json={"topic": "ACME", "mode": "deep"})
        assert refused.status_code == 402
        run = _run(client, topic="ACME", mode="deep", cap={"credit": "0.002000"})
        assert run["envelope_micro"] == {"credit": 2000}
        done = wait_for(
            lambda: _finished(client, run["id"]), timeout=120, what="the capped run to stop"
        )
        assert done["status"] == "stopped"
        receipt = _assert_receipt_equals_ledger(stack, tenant.api_key, client, run["id"])
        assert 0 < receipt["totals"]["credit"]["charged_micro"] <= 2000
        assert receipt["calls"][-1]["http_status"] == 402
        assert receipt["calls"][-1]["limit"] == f"task:{run['task_id']}"
        assert len(receipt["calls"]) < run["estimate"]["calls"]
    assert _balance(stack, tenant.api_key)["credit"]["held_micro"] == 0


def test_bad_requests_get_openai_errors_and_runs_are_private(researcher, tenant_factory) -> None:
    owner = tenant_factory({"credit": "10"})
    other = tenant_factory({"credit": "1"})
    with _client(researcher, owner.api_key) as client:
        bad = client.post("/v1/research", json={"topic": "ACME", "mode": "huge"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "mode"
        unknown = client.post("/v1/research", json={"topic": "x", "ticker": "ZZZZ"})
        assert unknown.json()["error"]["code"] == "unknown_ticker"
        run = _run(client, topic="GLOBX", mode="quick")
    with _client(researcher, other.api_key) as client:
        assert client.get(f"/v1/research/{run['id']}").status_code == 404
    anonymous = httpx.get(f"{researcher}/v1/research")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"


@pytest.fixture
def slow_upstream(upstream: httpx.Client) -> Any:
    """Every demo channel answers after 400 ms, so a run is still going when the test acts."""
    upstream.post("/_control/latency", json={"latency_ms": 400})
    yield upstream
    upstream.post("/_control/latency", json={"latency_ms": 0})


def _calls_done(client: httpx.Client, run_id: str, at_least: int) -> bool:
    return len(client.get(f"/v1/research/{run_id}/receipt").json()["calls"]) >= at_least


def test_cancel_mid_run_stops_calls_and_releases_holds(
    stack, researcher, tenant_factory, slow_upstream
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="GLOBX", mode="deep")
        wait_for(lambda: _calls_done(client, run["id"], 2), timeout=120, what="two calls")
        assert client.post(f"/v1/research/{run['id']}/cancel").status_code == 202
        done = wait_for(lambda: _finished(client, run["id"]), timeout=120, what="the cancel")
        assert done["status"] == "cancelled"
        calls_at_end = upstream_calls(slow_upstream)
        receipt = _assert_receipt_equals_ledger(stack, tenant.api_key, client, run["id"])
        assert 2 <= len(receipt["calls"]) < run["estimate"]["calls"]
        ledger = receipt["ledger"]
        assert ledger["status"] == "closed"
        # A later call inside the closed task is refused: the envelope is really shut.
        late = httpx.post(
            f"{stack.edge_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {tenant.api_key}", "x-tollway-task": run["task_id"]},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert late.status_code == 402
        assert client.post(f"/v1/research/{run['id']}/cancel").status_code == 409
    assert _balance(stack, tenant.api_key)["credit"]["held_micro"] == 0
    assert upstream_calls(slow_upstream) == calls_at_end


def test_a_researcher_restart_mid_run_fails_the_run_clearly(
    stack, researcher, tenant_factory, slow_upstream
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="NOVA", mode="deep")
        wait_for(lambda: _calls_done(client, run["id"], 1), timeout=120, what="a first call")
        stack.kill("researcher")
        stack.start_services(("researcher",))
        stack.wait_healthy(f"{researcher}/healthz", "researcher")
        done = client.get(f"/v1/research/{run['id']}").json()
        assert done["status"] == "failed"
        assert "restarted" in done["error"]
        assert "start a new run" in done["error"]
        events = client.get(f"/v1/research/{run['id']}/events").text
        assert "event: finished" in events
    wait_for(
        lambda: _balance(stack, tenant.api_key)["credit"]["held_micro"] == 0,
        timeout=60,
        what="the in-flight call to settle",
    )


def test_cli_runs_with_a_progress_bar_and_saves_the_report(
    stack, researcher, tenant_factory, tmp_path, capsys, monkeypatch
) -> None:
    tenant = tenant_factory({"credit": "10"})
    monkeypatch.setenv("TOLLWAY_BASE_URL", f"{stack.edge_url}/v1")  # research via the edge
    monkeypatch.setenv("TOLLWAY_API_KEY", tenant.api_key)
    out = tmp_path / "acme"

    code = main(
        ["research", "run", "--yes", "--mode", "quick", "--topic", "ACME", "--out", str(out)]
    )

    err = capsys.readouterr().err
    assert code == 0, err
    assert "3/3 calls" in err
    assert "equals the ledger: True" in err
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert "## Figures" in out.with_suffix(".md").read_text()
