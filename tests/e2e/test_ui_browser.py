"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

A user signs in with a key, creates a key, calls the gateway with it through the official
OpenAI SDK, finds the call in the request log and opens its receipt; a call that was retried and
fell back shows that chain. An operator watches a channel's circuit open on the live route tree,
sees a velocity breaker trip and resets it. Screenshots go to tests/artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from openai import OpenAI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, chat, circuit_state, new_channel, new_model
from tests.e2e.route_kit import settled_receipt as final_receipt
from tests.e2e.test_breakers import call, trip_a_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
# Headless, and nothing that reaches beyond this machine (no updates, sync or QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PRIMARY_DEMO, BACKUP_DEMO = "openai-backup", "openai-direct"
# Live pages poll every 2 s and reload on a change; on a loaded machine that takes more than
# expect's default 5 s.
expect.set_options(timeout=15_000)
T = TypeVar("T")


def _chromium() -> str | None:
    return os.environ.get("TOLLWAY_CHROMIUM") or shutil.which("chromium")


def _off_the_browsers_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a helper that uses ``asyncio.run`` (Playwright's sync API keeps a loop running here)."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(fn, *args, **kwargs).result()


@pytest.fixture(scope="module")
def browser(stack: Any) -> Iterator[Browser]:  # the stack starts first: it uses asyncio.run
    executable = _chromium()
    if executable is None:
        message = (
            "The dashboard's browser tests need Chromium: install Debian's 'chromium' package"
            " (deploy/scripts/install-deps.sh does, as root or with sudo), or point"
            " TOLLWAY_CHROMIUM at a Chromium binary."
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (no cookies) that fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == [], f"script errors on the page: {errors}"


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sign_in(page: Page, stack: Any, api_key: str) -> None:
    page.goto(f"{stack.edge_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui"))
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_user_creates_a_key_and_finds_an_sdk_call_with_its_receipt(
    stack, tenant_factory, page: Page
) -> None:
    tenant = tenant_factory({"credit": "10"})
    _sign_in(page, stack, tenant.api_key)
    expect(page.locator('[data-bucket="credit"]')).to_contain_text("10.000000")
    _shot(page, "user-overview")

    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("browser-test")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    expect(page.get_by_text("shown this once")).to_be_visible()
    _shot(page, "user-key-created")
    assert secret.startswith("tw-")

    client = OpenAI(base_url=f"{stack.edge_url}/v1", api_key=secret)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from the browser test"}]
    )
    request_id = raw.headers["x-request-id"]
    wait_for(lambda: final_receipt(stack, secret, request_id), what="the receipt")

    page.get_by_role("link", name="Requests").click()
    row = page.locator(f'tr[data-request-id="{request_id}"]')
    expect(row).to_contain_text("settled")
    _shot(page, "user-request-log")
    row.get_by_role("link", name=request_id).click()

    expect(page.get_by_role("heading", name=f"Receipt {request_id}")).to_be_visible()
    attempts = page.locator("ol.chain li.attempt")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_have_attribute("data-role", "primary")
    expect(attempts.first).to_contain_text("served")
    expect(attempts.first).to_contain_text("openai-direct")
    _shot(page, "user-receipt")


def test_a_retried_call_that_fell_back_shows_its_attempt_chain(
    stack, tenant_factory, upstream, page: Page
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, PRIMARY_DEMO)
        backup = new_channel(admin, stack, BACKUP_DEMO)
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "up-primary", "tier": 0},
                {"channel_id": backup, "upstream_model": "up-backup", "tier": 1},
            ],
        )
    armed = upstream.post(
        "/_control/faults",
        json={"channel": PRIMARY_DEMO, "kind": "status", "status": 503, "count": 2},
    )
    assert armed.status_code < 300, armed.text
    status, _, request_id = chat(stack, tenant.api_key, model)
    assert status == 200
    wait_for(lambda: final_receipt(stack, tenant.api_key, request_id), what="the receipt")

    _sign_in(page, stack, tenant.api_key)
    page.goto(f"{stack.edge_url}/ui/requests/{request_id}")

    attempts = page.locator("ol.chain li.attempt")
    expect(attempts).to_have_count(3)
    roles = [attempts.nth(i).get_attribute("data-role") for i in range(3)]
    channels = [attempts.nth(i).get_attribute("data-channel") for i in range(3)]
    assert roles == ["primary", "retry", "backup (tier 1)"]
    assert channels == [primary, primary, backup]
    expect(attempts.nth(0)).to_contain_text("http_error (503)")
    expect(attempts.nth(2)).to_contain_text("served")
    expect(page.get_by_role("heading", name="Attempts")).to_contain_text("fell back")
    _shot(page, "user-receipt-fallback")


def test_operator_watches_a_circuit_open_and_trips_and_resets_a_breaker(
    stack, tenant_factory, upstream, page: Page
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, PRIMARY_DEMO)
        backup = new_channel(admin, stack, BACKUP_DEMO)
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "u", "tier": 0},
                {"channel_id": backup, "upstream_model": "u", "tier": 1},
            ],
        )

    page.goto(f"{stack.edge_url}/ui/admin/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Your name").fill("alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Route tree")).to_be_visible()
    circuit = page.locator(f'table.channels tr[data-channel-id="{primary}"] [data-health]')
    expect(circuit).to_have_text("closed")

    upstream.post(
        "/_control/faults",
        json={"channel": PRIMARY_DEMO, "kind": "status", "status": 503, "count": 10_000},
    )
    with admin_client(stack) as admin:
        wait_for(
            lambda: (
                chat(stack, tenant.api_key, model)[0] == 200
                and circuit_state(admin, primary) == "open"
            ),
            what="the primary's circuit to open",
        )
    expect(circuit).to_have_text("open")  # the open page follows without a reload
    _shot(page, "operator-route-tree")
    upstream.delete("/_control/faults")

    page.get_by_role("link", name="Alerts").click()
    feed = page.locator('table[data-live="alerts"] tbody')
    expect(feed).to_contain_text(f"channel:{primary}")  # the limits service's error-rate alert
    expect(feed).to_contain_text("error_rate")
    _shot(page, "operator-alerts")
    page.get_by_role("link", name="Margins").click()
    expect(page.locator("#margins")).to_contain_text(backup)  # it served, so it earned
    _shot(page, "operator-margins")

    page.get_by_role("link", name="Breakers").click()
    tripped_tenant, key_id = _off_the_browsers_loop(
        trip_a_key, stack, tenant_factory, cooldown_seconds=600
    )
    row = page.locator(f'tr[data-breaker="key:{key_id}"]')
    expect(row).to_contain_text("tripped")  # the page follows without a reload
    _shot(page, "operator-breaker-tripped")

    row.get_by_role("button", name="Reset").click()
    expect(page.locator(f'tr[data-breaker="key:{key_id}"]')).to_contain_text("closed")
    _shot(page, "operator-breaker-reset")
    assert call(stack, tripped_tenant.api_key).status == 200
    with admin_client(stack) as admin:
        trail = admin.get("/audit", params={"kind": "breaker", "target": f"key:{key_id}"})
    assert [a["actor"] for a in trail.json()["data"]] == ["ui:alice"]


def _fits_the_page(page: Page) -> bool:
    """Nothing wider than the 1280 px viewport: no horizontal page scroll."""
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def test_amounts_show_their_own_buckets_unit_and_pages_fit_1280_px(
    stack, tenant_factory, upstream, page: Page
) -> None:
    # A direct primary (credit) that fails twice, then a pool backup (wallet, CNY) that serves.
    tenant = tenant_factory({"credit": "10", "wallet": "10"})
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, PRIMARY_DEMO)
        backup = new_channel(admin, stack, BACKUP_DEMO, route_type="pool")
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "up-primary", "tier": 0},
                {"channel_id": backup, "upstream_model": "up-backup", "tier": 1},
            ],
        )
    upstream.post(
        "/_control/faults",
        json={"channel": PRIMARY_DEMO, "kind": "status", "status": 503, "count": 2},
    )
    status, _, request_id = chat(stack, tenant.api_key, model)
    assert status == 200
    wait_for(lambda: final_receipt(stack, tenant.api_key, request_id), what="the receipt")

    _sign_in(page, stack, tenant.api_key)
    page.goto(f"{stack.edge_url}/ui/requests")
    expect(page.locator(f'tr[data-request-id="{request_id}"]')).to_contain_text("CNY")
    assert _fits_the_page(page)
    _shot(page, "user-request-log-1280")

    page.goto(f"{stack.edge_url}/ui/requests/{request_id}")
    attempts = page.locator("ol.chain li.attempt")
    expect(attempts).to_have_count(3)
    for failed in (attempts.nth(0), attempts.nth(1)):  # the direct attempts cost credit
        expect(failed.locator("dd").last).to_contain_text("credit")
        expect(failed.locator("dd").last).not_to_contain_text("CNY")
    expect(attempts.nth(2).locator("dd").last).to_contain_text("CNY")
    expect(page.locator("#hold")).to_contain_text("credit")  # the primary hold is credit's
    expect(page.locator("#charged")).to_contain_text("CNY")
    assert _fits_the_page(page)
    _shot(page, "user-receipt-units-1280")


def test_an_open_task_with_a_refused_call_is_not_shown_as_stopped(
    stack, tenant_factory, page: Page
) -> None:
    tenant = tenant_factory({"credit": "10"})
    headers = {"authorization": f"Bearer {tenant.api_key}"}
    opened = httpx.post(
        f"{stack.edge_url}/v1/tasks",
        headers=headers,
        json={"name": "tiny", "budgets": [{"bucket": "credit", "amount": "0.000001"}]},
    )
    task_id = opened.json()["id"]
    refused = wait_for(
        lambda: (
            (
                r := httpx.post(
                    f"{stack.edge_url}/v1/chat/completions",
                    headers={**headers, "x-tollway-task": task_id},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=30,
                )
            ).status_code
            == 402
            and r
        ),
        what="the call to be refused by the task",
    )
    assert refused.json()["error"]["code"] == "task_budget_insufficient"

    _sign_in(page, stack, tenant.api_key)
    page.goto(f"{stack.edge_url}/ui/tasks")
    row = page.locator("tr", has_text=task_id)
    expect(row).to_contain_text("open")
    expect(row).to_contain_text("last refused call")
    assert _fits_the_page(page)
    _shot(page, "user-tasks-1280")


def test_a_bad_group_by_is_named_in_words_not_a_python_repr(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})

    response = httpx.get(
        f"{stack.edge_url}/v1/usage",
        params={"group_by": "colour"},
        headers={"authorization": f"Bearer {tenant.api_key}"},
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "group_by"
    assert "group_by" in error["message"]
    assert "ParamType" not in error["message"]
    assert "<" not in error["message"]


def test_research_is_estimated_first_then_started_with_start_at_1280_px(
    stack, tenant_factory, page: Page
) -> None:
    stack.wait_healthy(f"http://127.0.0.1:{stack.config.researcher_port}/healthz", "researcher")
    tenant = tenant_factory({"credit": "10"})
    _sign_in(page, stack, tenant.api_key)
    page.goto(f"{stack.edge_url}/ui/research")
    page.get_by_label("Topic").fill("Is GLOBX a buy?")
    page.get_by_label("Mode").select_option("standard")
    page.get_by_role("button", name="Estimate").click()

    card = page.locator("section[data-estimate]")
    expect(card.get_by_role("heading")).to_contain_text("Estimate: Is GLOBX a buy? (standard")
    expect(card.locator('tr[data-bucket="credit"]')).to_contain_text("credit")
    expect(card).to_contain_text("No past runs of this mode")
    expect(page.locator("table tbody").last).to_contain_text("No run yet.")  # nothing started
    assert _fits_the_page(page)
    _shot(page, "user-research-estimate-1280")

    card.get_by_role("button", name="Start").click()
    expect(page).to_have_url(re.compile(r"/ui/research/run_"))
    expect(page.get_by_text("Finished: completed")).to_be_visible(timeout=120_000)
    page.goto(f"{stack.edge_url}/ui/research")
    expect(page.locator("table tbody").last).to_contain_text("Is GLOBX a buy?")


# Routing economics: sell and cost prices per 1M tokens, decimal (as the admin API takes them)
# and the same in micro-units, written out by hand.
EARN_SELL = {"input": "2.5", "output": "10"}  # CNY (the wallet's unit)
EARN_COST = {"currency": "CNY", "input": "1.25", "output": "5", "per_request": "0.00002"}
LOSE_SELL = {"input": "2", "output": "8"}
LOSE_COST = {"currency": "CNY", "input": "3", "output": "12"}
DIRECT_COST = {"currency": "USD", "input": "0.12", "output": "0.48"}
EARN_SELL_MICRO, EARN_COST_MICRO = (2_500_000, 10_000_000), (1_250_000, 5_000_000)
EARN_PER_CALL = 20
LOSE_SELL_MICRO, LOSE_COST_MICRO = (2_000_000, 8_000_000), (3_000_000, 12_000_000)


def _priced(tokens: tuple[int, int], per_1m: tuple[int, int], per_call: int = 0) -> int:
    """Hand-computed: the exact product, rounded up once to a micro-unit, plus a per-call fee."""
    return -(-(tokens[0] * per_1m[0] + tokens[1] * per_1m[1]) // 1_000_000) + per_call


def _fmt(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    return f"{sign}{abs(micro) // 1_000_000}.{abs(micro) % 1_000_000:06d}"


def _tokens(receipt: dict[str, Any]) -> tuple[int, int]:
    [attempt] = receipt["attempts"]
    return attempt["usage"]["input_tokens"], attempt["usage"]["output_tokens"]


def _operator_sign_in(page: Page, stack: Any) -> None:
    page.goto(f"{stack.edge_url}/ui/admin/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Your name").fill("alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Route tree")).to_be_visible()


def _doc_shot(page: Page, name: str, top: str, bottom: str) -> None:
    """The page from ``top`` down to ``bottom`` (CSS selectors), small enough for the README."""
    y0, y1 = page.evaluate(
        """([top, bottom]) => [
            document.querySelector(top).getBoundingClientRect().top + window.scrollY,
            document.querySelector(bottom).getBoundingClientRect().bottom + window.scrollY,
        ]""",
        [top, bottom],
    )
    y0 = max(y0 - 8, 0)
    clip = {"x": 0, "y": y0, "width": 1280, "height": y1 + 16 - y0}
    page.screenshot(path=str(ARTIFACTS / f"{name}-doc.png"), full_page=True, clip=clip)


def test_operator_sees_margins_costed_receipt_and_whatif_the_tenant_sees_no_cost(  # noqa: PLR0915 - one story
    stack, tenant_factory, browser: Browser, page: Page
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    tenant = tenant_factory({"wallet": "10", "credit": "10"})
    with admin_client(stack) as admin:
        earning = new_channel(
            admin,
            stack,
            "openai-pool",
            route_type="pool",
            bucket="wallet",
            prices=EARN_SELL,
            cost=EARN_COST,
        )
        losing = new_channel(
            admin,
            stack,
            "openai-pool-backup",
            route_type="pool",
            bucket="wallet",
            prices=LOSE_SELL,
            cost=LOSE_COST,
        )
        direct = new_channel(admin, stack, "openai-direct", cost=DIRECT_COST)
        models = {
            channel: new_model(admin, [{"channel_id": channel, "upstream_model": "gpt-4o-mini"}])
            for channel in (earning, losing, direct)
        }
    request_ids = {}
    for channel, model in models.items():
        status, _, request_ids[channel] = chat(stack, tenant.api_key, model)
        assert status == 200
    receipts = {
        channel: wait_for(
            lambda r=request_id: final_receipt(stack, tenant.api_key, r), what="the receipt"
        )
        for channel, request_id in request_ids.items()
    }
    until = datetime.now(UTC) + timedelta(seconds=1)

    # --- the hand computation, from the demo upstream's tokens and the prices above ---
    earn_tokens, lose_tokens = _tokens(receipts[earning]), _tokens(receipts[losing])
    earn_revenue = _priced(earn_tokens, EARN_SELL_MICRO)
    earn_cost = _priced(earn_tokens, EARN_COST_MICRO, EARN_PER_CALL)
    lose_revenue = _priced(lose_tokens, LOSE_SELL_MICRO)
    lose_cost = _priced(lose_tokens, LOSE_COST_MICRO)
    earn_margin = earn_revenue - earn_cost
    assert receipts[earning]["charged_micro"] == earn_revenue
    assert lose_cost > lose_revenue
    # What-if: the earning model's request priced on the losing channel, same tokens.
    moved_revenue = _priced(earn_tokens, LOSE_SELL_MICRO)
    moved_cost = _priced(earn_tokens, LOSE_COST_MICRO)

    _operator_sign_in(page, stack)
    page.goto(f"{stack.edge_url}/ui/admin/margins?{urlencode({'from': since.isoformat()})}")
    rows = page.locator("#margins tbody tr")
    earn_row = rows.filter(has=page.get_by_role("link", name=earning, exact=True))
    expect(earn_row.locator("td.num")).to_have_text(
        [
            f"{_fmt(earn_revenue)} CNY",
            f"{_fmt(earn_cost)} CNY",
            f"{_fmt(earn_margin)} CNY",
            "1 (0)",
        ]
    )
    lose_row = rows.filter(has=page.get_by_role("link", name=losing, exact=True))
    expect(lose_row).to_have_attribute("data-negative", "")
    expect(lose_row.locator("td.num").nth(2)).to_have_text(
        f"{_fmt(lose_revenue - lose_cost)} CNY negative"
    )
    direct_row = rows.filter(has=page.get_by_role("link", name=direct, exact=True))
    expect(direct_row.locator("td.num").nth(2)).to_have_text(
        "not comparable: revenue in credit, cost in USD"
    )
    expect(direct_row.locator("td.num").nth(1)).to_contain_text("USD")
    chart = page.locator("figure.chart-card svg")
    expect(chart).to_be_visible()  # one unit (CNY) is comparable: one chart
    expect(chart.locator(".neg")).not_to_have_count(0)  # the losing channel's bar points down
    assert _fits_the_page(page)
    _shot(page, "operator-margins-economics")
    _doc_shot(page, "operator-margins-economics", "body", "#margins")

    page.goto(f"{stack.edge_url}/ui/admin/receipts/{request_ids[earning]}")
    expect(page.locator("#margin")).to_have_text(f"{_fmt(earn_margin)} CNY")
    attempt = page.locator("#attempts tbody tr")
    expect(attempt).to_have_count(1)
    expect(attempt.locator("td.num")).to_have_text(
        [
            f"{earn_tokens[0]:,} / {earn_tokens[1]:,}",
            f"{_fmt(earn_cost)} CNY",
            f"{_fmt(earn_margin)} CNY",
        ]
    )
    assert _fits_the_page(page)
    _shot(page, "operator-receipt-cost")
    _doc_shot(page, "operator-receipt-cost", "body", "#attempts")

    page.get_by_role("link", name="What-if").click()
    page.locator("#from").fill(since.isoformat())
    page.locator("#to").fill(until.isoformat())
    policy = {"rules": [{"model": models[earning], "channel": losing}], "units": {"wallet": "CNY"}}
    page.locator("#policy").fill(json.dumps(policy, indent=2))
    page.get_by_role("button", name="Run what-if").click()
    moved = page.locator(f'#whatif-model tr[data-key="{models[earning]}"]')
    expect(moved.and_(page.locator('[data-measure="requests"]')).locator("td.num")).to_have_text(
        ["1", "1", "0"], timeout=120_000
    )
    figures = {
        ("charge", "wallet"): (earn_revenue, moved_revenue),
        ("cost", "CNY"): (earn_cost, moved_cost),
        ("margin", "CNY"): (earn_margin, moved_revenue - moved_cost),
    }
    for (measure, unit), (current, alternative) in figures.items():
        line = moved.and_(page.locator(f'[data-measure="{measure}"][data-unit="{unit}"]'))
        expect(line.locator("td.num")).to_have_text(
            [_fmt(current), _fmt(alternative), _fmt(alternative - current)]
        )
    assert _fits_the_page(page)
    _shot(page, "operator-whatif")
    _doc_shot(page, "operator-whatif", "#whatif-h", "#whatif-model")

    # The tenant's own receipts: the charge, never the upstream cost or the margin.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tenant_page = context.new_page()
        _sign_in(tenant_page, stack, tenant.api_key)
        for channel, request_id in request_ids.items():
            tenant_page.goto(f"{stack.edge_url}/ui/requests/{request_id}")
            expect(tenant_page.locator("#charged")).to_contain_text(
                _fmt(receipts[channel]["charged_micro"])
            )
            shown = tenant_page.locator("body").inner_text()
            assert "upstream cost" not in shown.lower()  # ("upstream model" is theirs)
            assert "margin" not in shown.lower()
            assert "USD" not in shown  # the direct channel's cost currency
            for hidden in (earn_cost, lose_cost, earn_margin, lose_revenue - lose_cost):
                assert _fmt(hidden) not in shown
        _shot(tenant_page, "user-receipt-no-cost")
    finally:
        context.close()
