"""Research runs keep the texts their calls exchanged (each answer is a prompt of the next call)
only until the report is written; the report keeps what the user asked for.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.test_research import _client, _finished, _run, researcher
from tests.integration import ledger_io as io

pytestmark = pytest.mark.e2e

__all__ = ["researcher"]  # the module's fixture, shared


def test_a_finished_run_keeps_its_report_and_drops_its_call_texts(
    stack: Any, researcher: str, tenant_factory: Any
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with _client(researcher, tenant.api_key) as client:
        run = _run(client, topic="Is ACME a buy?", mode="quick")
        done = wait_for(lambda: _finished(client, run["id"]), timeout=120, what="the run to end")
        markdown = client.get(f"/v1/research/{run['id']}/report.md").text
        receipt = client.get(f"/v1/research/{run['id']}/receipt")

    assert done["status"] == "completed", done["error"]
    calls = io.fetch(
        stack.dsn,
        "SELECT http_status, content, request_id FROM researcher.calls WHERE run_id = $1",
        run["id"],
    )
    assert len(calls) == 3
    assert all(c["http_status"] == 200 and c["request_id"] for c in calls)
    assert [c["content"] for c in calls] == ["", "", ""]
    # The report was written from those texts before they were dropped.
    assert "(not written" not in markdown
    assert len(markdown) > 500
    assert receipt.status_code == 200
    assert len(receipt.json()["calls"]) == 3
