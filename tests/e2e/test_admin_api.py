"""The admin API on the real stack: accounts, projects, keys, revocation, audit and OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import new_channel, new_model
from tests.e2e.test_breakers import trip_a_key

pytestmark = pytest.mark.e2e


def _admin(stack: Any, actor: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    if actor is not None:
        headers["x-tollway-actor"] = actor
    return httpx.Client(base_url=f"{stack.edge_url}/admin/v1", headers=headers, timeout=10)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _client_call(stack: Any, key: str) -> httpx.Response:
    return httpx.get(
        f"{stack.edge_url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10
    )


def _trail(admin: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    return list(_ok(admin.get("/audit", params={"limit": 1000, **params}))["data"])


def test_an_account_shows_its_projects_keys_and_a_link_to_its_balances(stack) -> None:
    account_id = _uid("acme")
    expires = datetime.now(UTC) + timedelta(days=30)
    with _admin(stack, "ops") as admin:
        opened = _ok(admin.post("/accounts", json={"name": "Acme", "id": account_id}), 201)
        project = _ok(admin.post("/projects", json={"account_id": account_id, "name": "ml"}), 201)
        issued = _ok(
            admin.post(
                "/keys",
                json={
                    "account_id": account_id,
                    "project_id": project["id"],
                    "name": "ci",
                    "allowed_models": ["gpt-4o-mini"],
                    "route_types": ["pool"],
                    "expires_at": expires.isoformat(),
                    "metadata": {"team": "data"},
                },
            ),
            201,
        )
        _ok(admin.post("/keys", json={"account_id": account_id}), 201)  # the default project's
        account = _ok(admin.get(f"/accounts/{account_id}"))
        projects = _ok(admin.get("/projects", params={"account_id": account_id}))["data"]
        one_project = _ok(admin.get(f"/projects/{project['id']}"))
        key = _ok(admin.get(f"/keys/{issued['id']}"))
        newest = _ok(admin.get("/accounts", params={"limit": 1}))

    assert account["name"] == "Acme"
    assert [p["name"] for p in account["projects"]] == ["default", "ml"]
    assert account["projects"][0]["id"] == opened["default_project_id"]
    assert account["keys"] == {"total": 2, "active": 2, "revoked": 0, "expired": 0}
    assert account["links"]["ledger"] == f"/admin/v1/ledger/accounts/{account_id}"
    assert projects == account["projects"]
    assert one_project["keys"]["total"] == 1
    assert one_project["account_id"] == account_id
    assert issued["key"].startswith("tw-")
    assert key == {k: v for k, v in issued.items() if k not in {"key", "audit_id"}}
    assert (key["project_id"], key["allowed_models"], key["route_types"]) == (
        project["id"],
        ["gpt-4o-mini"],
        ["pool"],
    )
    assert key["metadata"] == {"team": "data"}
    assert key["status"] == "active"
    assert datetime.fromisoformat(key["expires_at"]) == expires
    assert newest["data"][0]["id"] == account_id  # newest first
    assert newest["data"][0]["keys"] == {"total": 2, "active": 2}


def test_accounts_page_newest_first_without_overlap(stack) -> None:
    with _admin(stack) as admin:
        ids = [
            _ok(admin.post("/accounts", json={"name": "p", "id": _uid("page")}), 201)["id"]
            for _ in range(3)
        ]
        first = _ok(admin.get("/accounts", params={"limit": 2}))
        second = _ok(admin.get("/accounts", params={"limit": 2, "cursor": first["next_cursor"]}))
    seen = [a["id"] for a in first["data"] + second["data"]]
    assert seen[:3] == ids[::-1]
    assert len(set(seen)) == len(seen)


def test_a_revoked_key_gets_401_on_its_very_next_call(stack, tenant_factory) -> None:
    tenant = tenant_factory()
    assert _client_call(stack, tenant.api_key).status_code == 200  # now in the edge's key cache
    with _admin(stack, "security-team") as admin:
        [key] = _ok(admin.get("/keys", params={"account_id": tenant.account_id}))["data"]
        revoked = _ok(admin.post(f"/keys/{key['id']}/revoke"))
        refused = _client_call(stack, tenant.api_key)
        chat = httpx.post(
            f"{stack.edge_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {tenant.api_key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        again = _ok(admin.delete(f"/keys/{key['id']}"))
        trail = _trail(admin, target=key["id"])

    assert revoked["status"] == "revoked"
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    assert (chat.status_code, chat.json()["error"]["code"]) == (401, "revoked_api_key")
    assert again["revoked_at"] == revoked["revoked_at"]  # idempotent, and not audited twice
    assert again["audit_id"] is None
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("key.revoke", "security-team"),
        ("key.create", "admin"),
    ]
    assert trail[0]["before"]["status"] == "active"
    assert trail[0]["after"]["status"] == "revoked"


def test_key_listings_show_state_but_never_a_secret(stack) -> None:
    account_id = _uid("lst")
    with _admin(stack) as admin:
        _ok(admin.post("/accounts", json={"name": "L", "id": account_id}), 201)
        issued = [
            _ok(admin.post("/keys", json={"account_id": account_id, "name": n}), 201)
            for n in ("a", "b")
        ]
        _ok(admin.post(f"/keys/{issued[0]['id']}/revoke"))
        listing = admin.get("/keys", params={"account_id": account_id})
        revoked = _ok(admin.get("/keys", params={"account_id": account_id, "status": "revoked"}))
        trail = admin.get("/audit", params={"account_id": account_id})

    keys = _ok(listing)["data"]
    assert {k["name"]: k["status"] for k in keys} == {"a": "revoked", "b": "active"}
    assert [k["id"] for k in revoked["data"]] == [issued[0]["id"]]
    for item, secret in zip(sorted(keys, key=lambda k: k["name"]), issued, strict=True):
        assert item["prefix"] == secret["key"][:7]
        assert "key" not in item
        assert "key_hash" not in item
    for text in (listing.text, trail.text):
        for secret in (i["key"] for i in issued):
            digest = hashlib.sha256(secret.encode()).digest()
            assert secret not in text
            assert digest.hex() not in text
            assert base64.b64encode(digest).decode() not in text


def test_an_expired_key_is_listed_as_expired_and_refused(stack) -> None:
    account_id = _uid("exp")
    with _admin(stack) as admin:
        _ok(admin.post("/accounts", json={"name": "E", "id": account_id}), 201)
        expires = datetime.now(UTC) + timedelta(seconds=2)
        issued = _ok(
            admin.post("/keys", json={"account_id": account_id, "expires_at": expires.isoformat()}),
            201,
        )
        wait_for(
            lambda: admin.get(f"/keys/{issued['id']}").json()["status"] == "expired",
            timeout=15,
            what="the key to expire",
        )
    response = _client_call(stack, issued["key"])
    assert (response.status_code, response.json()["error"]["code"]) == (401, "expired_api_key")


def test_every_admin_mutation_is_in_one_audit_trail_with_its_actor(stack) -> None:
    actor = _uid("ops")
    account_id = _uid("aud")
    with _admin(stack, actor) as admin:
        _ok(admin.post("/accounts", json={"name": "Audited", "id": account_id}), 201)
        _ok(admin.post("/projects", json={"account_id": account_id, "name": "p2"}), 201)
        key = _ok(admin.post("/keys", json={"account_id": account_id}), 201)
        _ok(admin.post(f"/keys/{key['id']}/revoke"))
        money = {"account_id": account_id, "bucket": "credit", "unit": "credit"}
        _ok(admin.post("/topups", json=money | {"amount": "5", "idempotency_key": actor}), 202)
        budget = _ok(
            admin.post(
                "/budgets",
                json={"account_id": account_id, "name": "cap", "scope": "account"}
                | {"unit": "credit", "amount": "1"},
            ),
            202,
        )
        wait_for(  # the ledger applies the budget before it can be deleted
            lambda: admin.delete(f"/budgets/{budget['id']}").status_code == 202,
            what="the budget to be deleted",
        )
        limit = {"account_id": account_id, "scope": "key", "scope_id": key["id"]}
        _ok(admin.post("/velocity-limits", json=limit | {"tokens_per_minute": 1000}), 202)
        hook = _ok(admin.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}), 201)
        _ok(admin.delete(f"/webhooks/{hook['id']}"))
        reason = {"reason": "goodwill", "idempotency_key": f"{actor}-adj"}
        _ok(admin.post("/ledger/adjustments", json=money | reason | {"amount": "1"}), 202)
        channel = new_channel(admin, stack, "openai-direct")
        rotated = f"sk-rotated-{actor}"
        _ok(admin.patch(f"/channels/{channel}", json={"secret": rotated}))
        new_model(admin, [{"channel_id": channel, "upstream_model": "u"}])
        trail = _trail(admin, actor=actor)
        keys_only = _trail(admin, actor=actor, kind="key")
        by_account = _trail(admin, account_id=account_id)
        pages = [_ok(admin.get("/audit", params={"actor": actor, "limit": 5}))]
        while pages[-1]["next_before"] is not None:
            params = {"actor": actor, "limit": 5, "before": pages[-1]["next_before"]}
            pages.append(_ok(admin.get("/audit", params=params)))

    assert [e["action"] for e in reversed(trail)] == [
        "account.create",
        "project.create",
        "key.create",
        "key.revoke",
        "topup.request",
        "budget.create",
        "budget.delete",
        "velocity_limit.set",
        "webhook.create",
        "webhook.disable",
        "ledger.adjustment",
        "channel.create",
        "channel.update",
        "model.create",
        "routes.set",
    ]
    assert {e["actor"] for e in trail} == {actor}
    assert [e["id"] for e in trail] == sorted((e["id"] for e in trail), reverse=True)
    assert [e["action"] for e in keys_only] == ["key.revoke", "key.create"]
    assert {e["kind"] for e in by_account} >= {"account", "project", "key", "topup", "budget"}
    assert [e for p in pages for e in p["data"]] == trail
    topup = next(e for e in trail if e["action"] == "topup.request")
    assert (topup["target"], topup["after"]["amount_micro"]) == (f"{account_id}/credit", 5_000_000)
    assert topup["after"]["event_id"]
    update = next(e for e in trail if e["action"] == "channel.update")
    assert update["after"]["secret_rotated"] is True
    text = str(trail)
    for secret in (key["key"], hook["secret"], rotated, f"sk-secret-{channel}"):
        assert secret not in text


def test_an_operator_breaker_reset_is_audited(stack, tenant_factory) -> None:
    _, key_id = trip_a_key(stack, tenant_factory, cooldown_seconds=600)
    with _admin(stack, "on-call") as admin:
        reset = _ok(admin.post("/breakers/reset", json={"scope": "key", "scope_id": key_id}))
        [entry] = _trail(admin, kind="breaker", target=f"key:{key_id}")
    assert (entry["action"], entry["actor"]) == ("breaker.reset", "on-call")
    assert entry["after"]["event_id"] == reset["event_id"]
    assert entry["before"]["scope_id"] == key_id


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/accounts", {"name": "x", "id": "Not Valid"}, "id"),
        ("/keys", {"account_id": "a", "route_types": ["cheap"]}, "route_types[0]"),
        ("/keys", {"account_id": "a", "route_types": []}, "route_types"),
        ("/keys", {"account_id": "a", "allowed_models": []}, "allowed_models"),
        ("/keys", {"account_id": "a", "metadata": {"k": "v" * 501}}, "metadata.k"),
        ("/projects", {"account_id": "a", "name": ""}, "name"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(stack, path, body, param) -> None:
    with _admin(stack) as admin:
        response = admin.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_refusals_use_the_right_status_and_name_the_field(stack, tenant_factory) -> None:
    tenant = tenant_factory()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    with _admin(stack) as admin:
        checks = {
            "duplicate account": admin.post(
                "/accounts", json={"name": "again", "id": tenant.account_id}
            ),
            "duplicate project": admin.post(
                "/projects", json={"account_id": tenant.account_id, "name": "default"}
            ),
            "unknown model": admin.post(
                "/keys",
                json={"account_id": tenant.account_id, "allowed_models": ["gpt-4o-mini", "nope"]},
            ),
            "past expiry": admin.post(
                "/keys", json={"account_id": tenant.account_id, "expires_at": past}
            ),
            "unknown account": admin.get("/accounts/nobody-here"),
            "unknown account's keys": admin.post("/keys", json={"account_id": "nobody-here"}),
            "another account's project": admin.post(
                "/keys", json={"account_id": tenant.account_id, "project_id": "proj_nope"}
            ),
            "unknown project": admin.get("/projects/proj_nope"),
            "unknown key": admin.get("/keys/key_nope"),
            "revoke unknown key": admin.post("/keys/key_nope/revoke"),
            "top-up of unknown account": admin.post(
                "/topups",
                json={"account_id": "nobody-here", "bucket": "credit", "unit": "credit"}
                | {"amount": "1", "idempotency_key": "x"},
            ),
        }
    got = {
        name: (r.status_code, r.json()["error"]["param"], r.json()["error"]["code"])
        for name, r in checks.items()
    }
    assert got == {
        "duplicate account": (409, "id", "account_exists"),
        "duplicate project": (409, "name", "project_exists"),
        "unknown model": (400, "allowed_models[1]", "model_not_found"),
        "past expiry": (400, "expires_at", "invalid_expiry"),
        "unknown account": (404, "account_id", "account_not_found"),
        "unknown account's keys": (404, "account_id", "account_not_found"),
        "another account's project": (404, "project_id", "project_not_found"),
        "unknown project": (404, "project_id", "project_not_found"),
        "unknown key": (404, "key_id", "key_not_found"),
        "revoke unknown key": (404, "key_id", "key_not_found"),
        "top-up of unknown account": (404, "account_id", "account_not_found"),
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/accounts"),
        ("GET", "/accounts/x"),
        ("POST", "/projects"),
        ("GET", "/keys"),
        ("POST", "/keys/x/revoke"),
        ("DELETE", "/keys/x"),
        ("GET", "/audit"),
    ],
)
def test_admin_endpoints_refuse_a_bad_admin_token(stack, method: str, path: str) -> None:
    response = httpx.request(
        method,
        f"{stack.edge_url}/admin/v1{path}",
        headers={"authorization": "Bearer not-the-token"},
        json={} if method == "POST" else None,
        timeout=10,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"


def test_openapi_lists_the_admin_endpoints(stack) -> None:
    response = httpx.get(f"{stack.edge_url}/schema/openapi.json", timeout=10)
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/admin/v1/accounts": {"get", "post"},
        "/admin/v1/accounts/{account_id}": {"get"},
        "/admin/v1/projects": {"get", "post"},
        "/admin/v1/projects/{project_id}": {"get"},
        "/admin/v1/keys": {"get", "post"},
        "/admin/v1/keys/{key_id}": {"get", "delete"},
        "/admin/v1/keys/{key_id}/revoke": {"post"},
        "/admin/v1/topups": {"post"},
        "/admin/v1/audit": {"get"},
        "/admin/v1/budgets": {"get", "post"},
        "/admin/v1/channels": {"post"},
        "/admin/v1/ledger/accounts/{account_id}": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), path
    audit_params = {p["name"] for p in paths["/admin/v1/audit"]["get"]["parameters"]}
    assert {"kind", "target", "before", "limit"} <= audit_params
