"""The dashboard over plain HTTP: sign-in and sessions, CSRF, tenant isolation, and UI changes
going through the same audited paths as the API."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, settled_receipt
from tests.e2e.ui_kit import (
    error_message,
    login_operator,
    login_user,
    post_form,
    ui_client,
)

pytestmark = pytest.mark.e2e


def _query(stack: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _chat(stack: Any, key: str) -> str:
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    wait_for(lambda: settled_receipt(stack, key, request_id), what="the receipt")
    return request_id


def _key_id(stack: Any, account_id: str) -> str:
    [row] = _query(stack, "SELECT id FROM edge.api_keys WHERE account_id = $1", account_id)
    return str(row["id"])


def test_login_sets_an_httponly_strict_cookie_holding_a_session_id_never_the_key(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        response = login_user(client, tenant.api_key)

        assert response.status_code == 303
        assert response.headers["location"] == "/ui/"
        [cookie] = [c for c in response.headers.get_list("set-cookie") if "tollway_session" in c]
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
        token = cookie.split(";")[0].split("=", 1)[1]
        assert tenant.api_key not in cookie
        assert tenant.api_key[3:20] not in token
        home = client.get("/ui/")
        assert home.status_code == 200
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        assert home.headers["cache-control"] == "no-store"

    [row] = _query(
        stack,
        "SELECT kind, actor, account_id, key_id FROM edge.ui_sessions WHERE id_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    key_id = _key_id(stack, tenant.account_id)
    assert row == {
        "kind": "user",
        "actor": f"user:{key_id}",
        "account_id": tenant.account_id,
        "key_id": key_id,
    }
    edge_log = (stack.log_dir / "edge.log").read_text(encoding="utf-8")
    assert tenant.api_key not in edge_log


def test_a_wrong_key_is_refused_and_opens_no_session(stack) -> None:
    with ui_client(stack) as client:
        response = login_user(client, "tw-not-a-key")

    assert response.status_code == 401
    assert "Incorrect API key" in response.text
    assert "tollway_session" not in response.headers.get("set-cookie", "")


def test_pages_need_a_session_and_send_the_browser_to_login_and_back(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        page = client.get("/ui/requests?model=gpt-4o-mini")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=/ui/requests%3Fmodel%3Dgpt-4o-mini"
        operator = client.get("/ui/admin/routes")
        assert operator.headers["location"].startswith("/ui/admin/login?next=/ui/admin/routes")

        back = post_form(
            client,
            "/ui/login",
            "/ui/login",
            api_key=tenant.api_key,
            next="/ui/requests?model=gpt-4o-mini",
        )
        assert back.headers["location"] == "/ui/requests?model=gpt-4o-mini"
        elsewhere = post_form(
            client, "/ui/login", "/ui/login", api_key=tenant.api_key, next="https://example.org/"
        )
        assert elsewhere.headers["location"] == "/ui/"


def test_a_post_without_the_csrf_token_is_refused_before_anything_changes(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        assert login_user(client, tenant.api_key).status_code == 303

        missing = client.post("/ui/keys", data={"name": "forged"})
        wrong = client.post("/ui/keys", data={"name": "forged", "_csrf_token": "0" * 128})
        foreign = httpx.post(  # another site's form: no CSRF cookie, no token
            f"{stack.edge_url}/ui/keys",
            data={"name": "forged"},
            cookies={"tollway_session": client.cookies["tollway_session"]},
        )

    for response in (missing, wrong, foreign):
        assert response.status_code == 403
        assert "CSRF" in error_message(response)
        # The stale cookie is dropped, so the reload gets a new one.
        assert 'tollway_csrf=""; Max-Age=0' in response.headers["set-cookie"]
    keys = _query(stack, "SELECT name FROM edge.api_keys WHERE account_id = $1", tenant.account_id)
    assert [k["name"] for k in keys] == [""]
    with ui_client(stack) as client:
        login = client.post("/ui/login", data={"api_key": tenant.api_key})
    assert login.status_code == 403


def test_a_user_never_sees_another_accounts_receipt_key_or_requests(stack, tenant_factory) -> None:
    mine, theirs = tenant_factory({"credit": "1"}), tenant_factory({"credit": "1"})
    their_request = _chat(stack, theirs.api_key)
    their_key = _key_id(stack, theirs.account_id)
    with ui_client(stack) as client:
        login_user(client, mine.api_key)

        receipt = client.get(f"/ui/requests/{their_request}")
        listing = client.get("/ui/requests")
        by_their_key = client.get(f"/ui/requests?key={their_key}")
        revoke = post_form(client, "/ui/keys", f"/ui/keys/{their_key}/revoke")
        missing = client.get("/ui/requests/req_does-not-exist")

    assert receipt.status_code == 404
    assert missing.status_code == 404
    assert error_message(receipt) == error_message(missing).replace(
        "req_does-not-exist", their_request
    )
    assert their_request not in listing.text
    assert by_their_key.status_code == 404
    assert revoke.status_code == 404
    [key] = _query(stack, "SELECT revoked_at FROM edge.api_keys WHERE id = $1", their_key)
    assert key["revoked_at"] is None


def test_a_key_made_in_the_dashboard_is_shown_once_audited_as_the_user_and_revocable(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "1"})
    login_key = _key_id(stack, tenant.account_id)
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        created = post_form(client, "/ui/keys", "/ui/keys", name="laptop")
        secret = re.search(r'id="new-key-secret"[^>]*>(tw-[^<]+)<', created.text)
        assert secret, created.text[:1000]
        new_key = secret.group(1)
        assert new_key not in client.get("/ui/keys").text

        balance = httpx.get(
            f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {new_key}"}
        )
        assert balance.json()["account_id"] == tenant.account_id
        [row] = _query(
            stack,
            "SELECT id FROM edge.api_keys WHERE account_id = $1 AND name = 'laptop'",
            tenant.account_id,
        )
        revoked = post_form(client, "/ui/keys", f"/ui/keys/{row['id']}/revoke")
        assert revoked.status_code == 200

    after = httpx.get(
        f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {new_key}"}
    )
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "revoked_api_key"
    with admin_client(stack) as admin:
        trail = admin.get("/audit", params={"account_id": tenant.account_id, "kind": "key"}).json()
    actions = [(a["action"], a["actor"], a["target"]) for a in trail["data"]]
    assert ("key.revoke", f"user:{login_key}", row["id"]) in actions
    assert ("key.create", f"user:{login_key}", row["id"]) in actions
    assert all(new_key not in str(a) for a in trail["data"])


def test_revoking_the_key_a_user_signed_in_with_ends_the_session(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        assert client.get("/ui/").status_code == 200
        with admin_client(stack) as admin:
            revoked = admin.post(f"/keys/{_key_id(stack, tenant.account_id)}/revoke")
            assert revoked.status_code == 200

        assert client.get("/ui/").headers["location"].startswith("/ui/login")


def test_logout_ends_the_session_for_every_copy_of_the_cookie(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        stolen = client.cookies["tollway_session"]
        out = post_form(client, "/ui/", "/ui/logout")
        assert out.headers["location"] == "/ui/login"

    replay = httpx.get(f"{stack.edge_url}/ui/", cookies={"tollway_session": stolen})
    assert replay.status_code == 303


def test_operators_sign_in_with_the_admin_token_and_users_are_not_operators(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        wrong = login_operator(client, token="tw-admin-guess")
        assert wrong.status_code == 401
        login_user(client, tenant.api_key)
        assert client.get("/ui/admin/routes").status_code == 303

    with ui_client(stack) as client:
        assert login_operator(client).status_code == 303
        tree = client.get("/ui/admin/routes")
        assert tree.status_code == 200
        assert "openai-direct" in tree.text
        live = client.get("/ui/admin/routes.json").json()["channels"]
        assert live["openai-direct"]["state"] in {"closed", "open", "half_open"}
        assert client.get("/ui/").headers["location"].startswith("/ui/login")
    assert ADMIN_TOKEN not in (stack.log_dir / "edge.log").read_text(encoding="utf-8")


def test_an_operator_top_up_is_applied_once_and_audited_under_their_name(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "1"})
    with ui_client(stack) as client:
        login_operator(client, name="bob")
        page = client.get(f"/ui/admin/accounts/{tenant.account_id}").text
        idem = re.search(r'name="idempotency_key" value="([^"]+)"', page)
        assert idem
        fields = {
            "bucket": "credit",
            "unit": "credit",
            "amount": "2.50",
            "idempotency_key": idem.group(1),
        }
        page_path = f"/ui/admin/accounts/{tenant.account_id}"
        for _ in range(2):  # a double submit
            sent = post_form(client, page_path, f"{page_path}/topups", **fields)
            assert sent.status_code == 303

    def credit() -> int:
        response = httpx.get(
            f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {tenant.api_key}"}
        )
        return next(b["available_micro"] for b in response.json()["buckets"])

    wait_for(lambda: credit() == 3_500_000, what="the top-up")
    with admin_client(stack) as admin:
        trail = admin.get("/audit", params={"account_id": tenant.account_id, "kind": "topup"})
    actors = [a["actor"] for a in trail.json()["data"]]
    # The second submit reuses the key with the same body: it gets the first one's answer and
    # publishes nothing, so the one top-up has one audit row.
    assert actors.count("ui:bob") == 1
    assert credit() == 3_500_000


def test_usage_charts_and_the_request_log_show_the_accounts_traffic(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "2"})
    request_id = _chat(stack, tenant.api_key)
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        log = client.get("/ui/requests", params={"model": "gpt-4o-mini"})
        other_model = client.get("/ui/requests", params={"model": "claude-3-5-haiku"})
        usage = client.get("/ui/usage", params={"group_by": "route", "metric": "tokens"})
        overview = client.get("/ui/")

    assert f'data-request-id="{request_id}"' in log.text
    assert request_id not in other_model.text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in usage.text
    assert 'data-series="direct"' in usage.text
    assert request_id in overview.text  # its ledger entries


def test_a_research_run_starts_from_the_dashboard_streams_progress_and_its_report_downloads(
    stack, tenant_factory
) -> None:
    stack.wait_healthy(f"http://127.0.0.1:{stack.config.researcher_port}/healthz", "researcher")
    tenant = tenant_factory({"credit": "10"})
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        started = post_form(
            client, "/ui/research", "/ui/research", topic="Is ACME a buy?", mode="quick"
        )
        assert started.status_code == 303, error_message(started)
        page = started.headers["location"]
        run_id = page.rsplit("/", 1)[-1]

        events = client.get(f"{page}/events", timeout=120).text  # ends with the run
        done = client.get(page).text
        report = client.get(f"{page}/report.md")
        history = client.get("/ui/research").text

    assert "event: call_finished" in events
    assert "event: finished" in events
    assert f"/ui/research/{run_id}/report.pdf" in done
    assert "matches the ledger" in done
    assert report.status_code == 200
    assert report.headers["content-disposition"].startswith("attachment;")
    assert "ACME" in report.text
    assert run_id in history


def test_the_research_page_estimates_first_and_starts_only_on_start(stack, tenant_factory) -> None:
    stack.wait_healthy(f"http://127.0.0.1:{stack.config.researcher_port}/healthz", "researcher")
    tenant = tenant_factory({"credit": "10"})
    with ui_client(stack) as client:
        login_user(client, tenant.api_key)
        estimated = post_form(
            client, "/ui/research", "/ui/research/estimate", topic="Is NOVA a buy?", mode="deep"
        )
        before = client.get("/ui/research").text
        refused = post_form(
            client, "/ui/research", "/ui/research/estimate", topic="Is Apple a buy?", mode="deep"
        )
        started = post_form(
            client, "/ui/research", "/ui/research", topic="Is NOVA a buy?", mode="deep"
        )
        assert started.status_code == 303, error_message(started)
        run_id = started.headers["location"].rsplit("/", 1)[-1]
        page_url = f"/ui/research/{run_id}"
        post_form(client, page_url, f"{page_url}/cancel")  # no need to spend the whole run

    assert estimated.status_code == 200, error_message(estimated)
    page = estimated.text
    assert "data-estimate" in page
    assert 'data-basis="static"' in page  # a new account has no past runs
    assert '<td class="num">13</td>' in page  # deep: 13 calls
    assert 'data-bucket="credit"' in page
    assert re.search(r'class="num">\d+\.\d{6} credit</td>', page)  # amounts in the unit
    assert 'action="/ui/research"' in page
    assert '<input type="hidden" name="topic" value="Is NOVA a buy?">' in page
    assert '<input type="hidden" name="mode" value="deep">' in page
    assert ">Start</button>" in page
    assert "No run yet." in before  # the estimate started nothing
    assert refused.status_code == 400
    assert "ACME, GLOBX, NOVA" in refused.text
