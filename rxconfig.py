"""Reflex configuration. Application settings live in codexk8s.config (CODEXK8S_* variables)."""

import reflex as rx

from codexk8s.config import get_settings
from codexk8s.web.origins import allowed_origins

config = rx.Config(
    app_name="codexk8s",
    app_module_import="codexk8s.web.app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # Reflex state is shared between replicas through Redis when one is configured.
    redis_url=get_settings().redis_url,
    # Only our own pages may use the session cookie: CORS answers (with credentials) and the
    # Socket.IO handshake of the dashboard accept PUBLIC_URL's origin and refuse every other.
    cors_allowed_origins=allowed_origins(get_settings()),
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="inherit", accent_color="indigo", radius="medium")
        )
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
