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

    print(f"\nopenapi fuzz: {dict(tally)}")  # noqa: T201 - the figures, shown with -s
    assert tally["operations"] >= 40
    assert not failures, f"{len(failures)} 5xx:\n" + "\n".join(failures[:40])
