"""Choose the runtime from the settings (CODEXK8S_RUNTIME)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from codexk8s.config import ENV_PREFIX, ConfigError, Settings
from codexk8s.domain.runtime import Runtime


def build_runtime(settings: Settings, *, installation: str) -> Runtime:
    """The configured runtime, stamping and adopting only workloads of `installation`."""
    if settings.runtime == "local":
        from codexk8s.adapters.local.runtime import LocalRuntime

        # The venv's bin first, so the default command `codexk8s agent run` resolves to this
        # installation even when the control plane was started by full path.
        path = os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
        )
        return LocalRuntime(settings.data_dir / "runs", path=path, installation=installation)
    from codexk8s.adapters.kubernetes.runtime import from_settings

    if not settings.agent_image:
        raise ConfigError(
            f"{ENV_PREFIX}AGENT_IMAGE: required with {ENV_PREFIX}RUNTIME=kubernetes (the image "
            "agents run in unless `codexk8s agent set ROLE --image` names another)"
        )
    return from_settings(settings, image_default=settings.agent_image, installation=installation)
