"""Work that lives as long as the server process: the run engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from codexk8s.adapters.runtimes import build_runtime
from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine
from codexk8s.jobs.engine import RunEngine


@asynccontextmanager
async def run_engine() -> AsyncIterator[None]:
    """Start the dispatcher/reconciler with the app; stop it (releasing leadership) on shutdown."""
    settings = get_settings()
    if not settings.engine_enabled:
        yield
        return
    engine = RunEngine(
        engine=get_engine(),
        runtime=build_runtime(settings),
        callback_url=settings.effective_public_url,
    )
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()
