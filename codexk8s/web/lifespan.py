"""Work that lives as long as the server process: the control loop, and a garbage-collector
setting for request latency."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from codexk8s.adapters.runtimes import build_runtime
from codexk8s.config import Settings, get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine
from codexk8s.jobs.control_loop import ControlLoop, replica_id
from codexk8s.services import model_checks
from codexk8s.services.github_feedback import GitHubFeedback
from codexk8s.services.installation import installation_id


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, the compiled app, SQLAlchemy's caches) out
    of the garbage collector's reach.

    A webhook parses a ~12 KB payload into hundreds of objects, so collections run all the time;
    each full collection walked the few hundred thousand start-up objects too, and those pauses
    were the p99 of ingest (77 ms before, 30 ms after, at a p50 of 17 ms; docs/benchmarks.md).
    Objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def frozen_startup_objects() -> AsyncIterator[None]:
    """Lifespan task: `freeze_startup_objects` once the app has loaded."""
    freeze_startup_objects()
    yield


@asynccontextmanager
async def run_control_loop() -> AsyncIterator[None]:
    """Start the dispatcher/reconciler with the app; stop it (releasing leadership) on shutdown."""
    settings = get_settings()
    if not settings.engine_enabled:
        yield
        return
    owner = replica_id()
    control_loop = ControlLoop(
        engine=get_engine(),
        runtime=build_runtime(settings, installation=installation_id(get_engine())),
        callback_url=settings.run_callback_url(),
        cleanup_after=timedelta(hours=settings.cleanup_after_hours),
        log_policy=settings.log_policy(),
        owner=owner,
        feedback=GitHubFeedback(
            engine=get_engine(), settings=settings, box=get_secret_box(), owner=owner
        ),
        model_check=(
            functools.partial(_check_model, settings)
            if model_checks.is_configured(settings)
            else None
        ),
    )
    await control_loop.start()
    try:
        yield
    finally:
        await control_loop.stop()


async def _check_model(settings: Settings, model: str) -> None:
    await model_checks.check_model(settings=settings, model=model)
