"""Reflex configuration. Application settings live in codexk8s.config (CODEXK8S_* variables)."""

import reflex as rx

from codexk8s.config import get_settings

config = rx.Config(
    app_name="codexk8s",
    app_module_import="codexk8s.web.app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # Reflex state is shared between replicas through Redis when one is configured.
    redis_url=get_settings().redis_url,
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="inherit", accent_color="indigo", radius="medium")
        )
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
