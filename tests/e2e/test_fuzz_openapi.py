"""The whole OpenAPI of the edge, fuzzed: no generated input gets a 5xx.

Schemathesis reads ``/schema/openapi.json`` from the running stack and, for every operation
(client endpoints with a valid key of a tenant with a little money, admin endpoints with the
admin token), sends inputs valid by the schema and inputs that break it: wrong types, huge
numbers, NUL bytes and odd Unicode in strings, path ids and query filters. Any 5xx fails, with
the request that got it. Bounded for CI: a fixed number of examples per operation and mode, a
fixed seed (``derandomize``), no example database. The figures are printed at the end (``-s``).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.conftest import ADMIN_TOKEN

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollway.devstack.seed import Tenant

pytestmark = pytest.mark.e2e

# Values generators rarely hit, sent to every path parameter, query parameter and JSON body of
# every operation: what answered 5xx before (NUL ids and filters, numbers past bigint, instants
# that overflow in UTC, bodies nested past the event encoder's limit).
NASTY_VALUES = [
    "\x00",
    "a\x00b",
    "9" * 30,
    "-" + "9" * 30,
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "\u0665",
    "x" * 3000,
]
NASTY_BODIES: list[Any] = [
    {"x\x00": "\x00"},
    {"amount": "9" * 30, "account_id": "\x00", "unit": "\x00", "scope_id": "\x00"},
    {"amount": 2**64 - 1, "tokens_per_minute": 2**63},
    [1] * 3,
]
EXAMPLES = 10  # per operation and mode: 49 operations x 2 modes, about a thousand cases
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def _fuzz(
    operation: Any, mode: schemathesis.GenerationMode, call: Callable[[schemathesis.Case], Any]
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        call(case)

    run()


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _nasty(operation: Any) -> list[schemathesis.Case]:
    """Each nasty value in each path and query parameter, each nasty body: one case each."""
    params = [(p.name, p.location.value) for p in operation.iter_parameters()]
    path = {name: "x" for name, where in params if where == "path"}
    cases = []
    for name, where in params:
        for value in NASTY_VALUES:
            if where == "path":
                cases.append(operation.Case(path_parameters={**path, name: value}))
            elif where == "query":
                cases.append(operation.Case(path_parameters=path, query={name: value}))
    if operation.body:
        bodies = [*NASTY_BODIES, _deep(250), {"deep": _deep(255)}]
        cases += [
            operation.Case(path_parameters=path, body=body, media_type="application/json")
            for body in bodies
        ]
    return cases


def test_no_input_gets_a_5xx(stack: Any, tenant_factory: Callable[..., Tenant]) -> None:
    key = tenant_factory({"credit": "0.5"}).api_key
    api = schemathesis.openapi.from_url(f"{stack.edge_url}/schema/openapi.json")
    tally: collections.Counter[str] = collections.Counter()
    failures: list[str] = []

    def call(case: schemathesis.Case) -> None:
        token = ADMIN_TOKEN if case.path.startswith("/admin/") else key
        headers = {**(case.headers or {}), "authorization": f"Bearer {token}"}
        response = case.call(base_url=stack.edge_url, headers=headers, timeout=60)
        tally["cases"] += 1
        tally[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}:"
                f" {response.text[:300]}\n  {case.as_curl_command()[:1500]}"
            )

    for result in api.get_all_operations():
        operation = result.ok()
        tally["operations"] += 1
        for mode in MODES:
            try:
                _fuzz(operation, mode, call)
            except Unsatisfiable:
                tally[f"{mode.value}_unsatisfiable"] += 1
        for case in _nasty(operation):
            tally["nasty"] += 1
            call(case)

    print(f"\nopenapi fuzz: {dict(tally)}")  # noqa: T201 - the figures, shown with -s
    assert tally["operations"] >= 40
    assert not failures, f"{len(failures)} 5xx:\n" + "\n".join(failures[:40])
