"""Who is looking at the dashboard, resolved on the server from the HttpOnly session cookie.

The browser cannot read `codexk8s_session` (HttpOnly) and Reflex 0.10 no longer sends request
cookies to the frontend; the cookie reaches the backend in the headers of the Socket.IO handshake
(`self.router.headers.cookie`). The principal lives in a backend-only var; the browser sees only
what it displays. Handlers that act re-resolve the session on every event, so a revoked session
or a disabled user loses access at once, not at the next page load.

The handshake's Origin must be ours as well (`web/origins.py`): the Socket.IO server already
refuses other origins, and a connection that still arrives from elsewhere (or with no Origin, as
no browser connects) resolves nobody, so a page of another site cannot act with the cookie.
"""

from __future__ import annotations

import asyncio

import reflex as rx
from reflex.istate.data import HeaderData
from starlette.requests import cookie_parser

from codexk8s.config import get_settings
from codexk8s.domain.authorization import Principal
from codexk8s.services import sessions
from codexk8s.web.http.auth import SESSION_COOKIE, session_ttl
from codexk8s.web.origins import is_allowed_origin


def session_token(headers: HeaderData) -> str | None:
    """The session cookie of a dashboard connection, from its handshake headers; None when the
    connection did not come from one of our own pages."""
    if not is_allowed_origin(headers.origin, get_settings()):
        return None
    return cookie_parser(headers.cookie).get(SESSION_COOKIE) if headers.cookie else None


def _lookup(token: str) -> tuple[Principal, sessions.UserProfile] | None:
    principal = sessions.authenticate(session_token=token, ttl=session_ttl(get_settings()))
    if principal is None:
        return None
    profile = sessions.load_profile(user_id=principal.user_id)
    return None if profile is None else (principal, profile)


class AuthState(rx.State):
    """The signed-in person, for the top bar and for every page's access checks."""

    email: str = ""
    role: str = ""
    is_signed_in: bool = False
    is_platform_admin: bool = False
    # False until the first lookup, so pages need not flash "sign in" at a signed-in person.
    is_resolved: bool = False

    _principal: Principal | None = None

    def _session_token(self) -> str | None:
        return session_token(self.router.headers)

    async def _resolve_principal(self) -> Principal | None:
        """Look the session up again and refresh what the top bar shows; other states' handlers
        call it through `get_state(AuthState)` before acting."""
        token = self._session_token()
        found = await asyncio.to_thread(_lookup, token) if token else None
        if found is None:
            self._principal = None
            self.email = self.role = ""
            self.is_signed_in = self.is_platform_admin = False
        else:
            principal, profile = found
            self._principal = principal
            self.email, self.role = profile.email, profile.role
            self.is_signed_in = True
            self.is_platform_admin = principal.is_platform_admin
        self.is_resolved = True
        return self._principal

    @rx.event
    async def load_session(self) -> None:
        """`on_load` of every page."""
        await self._resolve_principal()
