"""Which browser origins may act with a signed-in person's cookie: PUBLIC_URL's origin only.

Browsers attach the session cookie (SameSite=Lax) to requests from any page of the same site,
which includes another port on the host and sibling subdomains. So every cookie-authenticated
door checks where a request comes from: CORS and the Socket.IO handshake (rxconfig's
`cors_allowed_origins`), each Reflex handler's principal (`web/state/auth.py`), and the HTTP
routes that change something (`cross_site_problem`).

On the embedded default (no PUBLIC_URL, a loopback HOST) the dashboard is reached as
`http://127.0.0.1:PORT` as often as `http://localhost:PORT`; both spellings (and `[::1]`) of
that one port are ours. An explicit PUBLIC_URL is exactly one origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from codexk8s.config import Settings

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _netloc(host: str, port: int | None, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{shown}:{port}"


def origin_of(url: str | None) -> str | None:
    """The origin (`scheme://host[:port]`, default port left out, host lower-case) of URL, as a
    browser spells it in the Origin header; None for anything that is not an http(s) URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{scheme}://{_netloc(parts.hostname.lower(), port, scheme)}"


def allowed_origins(settings: Settings) -> list[str]:
    """The origins whose pages may use the session cookie, PUBLIC_URL's first."""
    public = origin_of(settings.effective_public_url)
    found = [public] if public else []
    if settings.public_url is None and settings.host in _LOOPBACK_HOSTS:
        for host in _LOOPBACK_HOSTS:
            alias = f"http://{_netloc(host, settings.port, 'http')}"
            if alias not in found:
                found.append(alias)
    return found


def is_allowed_origin(origin: str | None, settings: Settings) -> bool:
    """True when ORIGIN (an Origin header) is one of ours; a missing Origin is not."""
    normalized = origin_of(origin)
    return normalized is not None and normalized in allowed_origins(settings)


def cross_site_problem(headers: Mapping[str, str], settings: Settings) -> str | None:
    """Why a cookie-authenticated request that changes something may not come from our own
    pages (judged by Origin, else Referer), or None when it does."""
    sent = headers.get("origin") or headers.get("referer")
    if not sent:
        return "a request signed in by cookie must send an Origin (or Referer) header"
    if not is_allowed_origin(sent, settings):
        return (
            "the request's Origin does not match this server's public URL; "
            "use an API token for scripts"
        )
    return None
