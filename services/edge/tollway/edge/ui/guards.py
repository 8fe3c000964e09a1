"""Who may see a dashboard page: the session dependencies, the login redirect, form reading.

A page that needs a user takes ``session`` from :func:`user_session`; an operator page from
:func:`operator_session`. Without the right session the browser is sent to the matching login
page (and back after it). A user session whose key was revoked or expired is ended on the spot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.params import SkipValidation
from litestar.response import Template

from tollway.edge import errors
from tollway.edge.ui.sessions import COOKIE, Session, SessionStore
from tollway.events.envelope import utcnow

if TYPE_CHECKING:
    from litestar import Request

# A page's ``session`` parameter: the value the dependency built, used as is (Litestar would
# otherwise rebuild the dataclass from its fields).
SessionParam = SkipValidation[Session]
USER_LOGIN = "/ui/login"
OPERATOR_LOGIN = "/ui/admin/login"
MAX_FIELD = 10_000


class LoginRequiredError(Exception):
    """No session of the kind a page needs: send the browser to ``login``, then to ``next``."""

    def __init__(self, login: str, next_path: str) -> None:
        """Remember where to sign in and where to come back to."""
        super().__init__(login)
        self.login = login
        self.next_path = next_path


def sessions(request: Request[Any, Any, Any]) -> SessionStore:
    """The app's session store."""
    store: SessionStore = request.app.state.ui_sessions
    return store


def _here(request: Request[Any, Any, Any]) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def user_session(request: Request[Any, Any, Any]) -> Session:
    """The signed-in user's session, or a redirect to the user login."""
    store = sessions(request)
    session = await store.get(request.cookies.get(COOKIE))
    if session is None or session.kind != "user":
        raise LoginRequiredError(USER_LOGIN, _here(request))
    key = session.user_key
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= utcnow()):
        await store.end(session)
        raise LoginRequiredError(USER_LOGIN, _here(request))
    return session


async def operator_session(request: Request[Any, Any, Any]) -> Session:
    """The signed-in operator's session, or a redirect to the operator login."""
    session = await sessions(request).get(request.cookies.get(COOKIE))
    if session is None or session.kind != "operator":
        raise LoginRequiredError(OPERATOR_LOGIN, _here(request))
    return session


async def form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """A submitted form's text fields (the CSRF middleware has checked its token already)."""
    data = await request.form()
    out: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, str):
            if len(value) > MAX_FIELD or "\x00" in value:
                raise errors.InvalidRequestError(f"The field '{name}' is not acceptable.")
            out[name] = value.strip()
    return out


def page(template: str, session: Session | None, **context: Any) -> Template:
    """A dashboard page with the signed-in session for its navigation."""
    return Template(template_name=template, context={"session": session, **context})
