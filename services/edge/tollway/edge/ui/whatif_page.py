"""The operator's what-if page: a period and a policy in, the report as a table out.

It runs exactly what ``POST /admin/v1/whatif`` runs (:func:`tollway.edge.whatif_admin.run_whatif`)
and, like it, changes nothing. A policy or period it cannot use is shown on the form with the
field it names (status 400), so the operator can fix it in place.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.response import Template  # noqa: TC002 - Litestar reads the signature at run time

from tollway.edge import errors, whatif_admin
from tollway.edge.ui.guards import SessionParam, form, operator_session, page
from tollway.whatif.policy import PolicyError, load_policy

EXAMPLE = """{
  "rules": [{"model": "gpt-4o-mini", "route_type": "pool"}],
  "prices": {"openai-pool": {"cost": {"currency": "CNY", "input": "0.5", "output": "2"}}},
  "units": {"wallet": "CNY"}
}"""


def _form_page(session: SessionParam, fields: dict[str, str], **context: Any) -> Template:
    return page(
        "whatif.html",
        session,
        nav="whatif",
        fields={"from": "", "to": "", "policy": EXAMPLE, **fields},
        **context,
    )


class WhatIfPage(Controller):
    """``/ui/admin/whatif``; needs an operator session."""

    path = "/ui/admin/whatif"
    dependencies = {"session": Provide(operator_session)}  # noqa: RUF012

    @get("/")
    async def show(self, session: SessionParam) -> Template:
        """The form, with an example policy."""
        return _form_page(session, {})

    @post("/", status_code=200)
    async def run(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """Run the what-if and show its table (or the form with what is wrong)."""
        fields = await form(request)
        text = fields.get("policy", "")
        try:
            start, end = whatif_admin.period(fields.get("from", ""), fields.get("to", ""))
            name = "policy.json" if text.lstrip().startswith("{") else "policy.toml"
            policy = load_policy(text, name)
            report = await whatif_admin.run_whatif(request, start, end, policy)
        except PolicyError as exc:
            error = f"Invalid policy: {exc}."
        except errors.InvalidRequestError as exc:
            error = exc.message
        else:
            return _form_page(session, fields, report=report.as_json())
        page_ = _form_page(session, fields, error=error)
        page_.status_code = 400
        return page_
