"""The control loop as the lane runs it: built from the CODEXK8S_* settings like `serve` does,
with the lane's short timings. `python -m tests.kube.control_loop_process` runs it alone in a
process, so a test can SIGKILL a control plane mid-run."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta
from typing import Any

from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime, from_settings
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine
from codexk8s.jobs.control_loop import ControlLoop, ControlLoopTimings
from codexk8s.services.github_feedback import GitHubFeedback
from codexk8s.services.installation import installation_id

FAST = ControlLoopTimings(
    dispatch_seconds=0.2, leader_seconds=0.3, sweep_seconds=2, lease_seconds=2,
    cleanup_seconds=3600, cancel_grace_seconds=1, feedback_seconds=0.3,
)  # fmt: skip
READY = "control loop started"


def make_runtime(**options: Any) -> KubernetesRuntime:
    """The product's runtime for the configured cluster, with lane-short graces. kwok's kubelet
    never ends a log follow (its containers look alive to it), so a short read timeout lets the
    follower notice the end through the pod's status."""
    settings = get_settings()
    assert settings.agent_image
    return from_settings(
        settings, image_default=settings.agent_image, installation=installation_id(get_engine()),
        rejection_grace_seconds=3, log_poll_interval=0.2, log_read_timeout=5, **options,
    )  # fmt: skip


def make_control_loop(
    runtime: KubernetesRuntime, timings: ControlLoopTimings = FAST
) -> ControlLoop:
    settings = get_settings()
    return ControlLoop(
        engine=get_engine(), runtime=runtime, callback_url=settings.run_callback_url(),
        owner=f"lane-{uuid.uuid4().hex[:6]}", timings=timings,
        feedback=GitHubFeedback(
            engine=get_engine(), settings=settings, box=get_secret_box(), owner="lane",
            client_options={"backoff_seconds": 0.01},
        ),
        cleanup_after=timedelta(hours=settings.cleanup_after_hours),
    )  # fmt: skip


async def _serve() -> None:
    control_loop = make_control_loop(make_runtime())
    await control_loop.start()
    print(READY, flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    sys.exit(asyncio.run(_serve()))
