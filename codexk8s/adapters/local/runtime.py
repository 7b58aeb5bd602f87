"""The local runtime: each run's command as a supervised child process (the embedded default).

Layout per run, under the runtime's root folder (`<DATA_DIR>/runs/<installation id>/`: a new
database next to an old data folder starts afresh instead of adopting the old database's run 1
as its own): `<workload name>/` is the working folder and
holds `state.json` (supervisor pid and its start time, to tell a live process from a reused
pid), `output.log` (everything the command prints on stdout and stderr, one timestamped record a
line, in the order written; runs started by an older supervisor have `stdout.log` /
`stderr.log`) and, once it ended,
`exit.json` (written by the supervisor, see supervisor.py). Because outcome and output live in
files, a control plane that restarts finds a run that is still going, follows its output from
where it stopped, and learns the exit code of one that ended meanwhile. A run whose process is
gone without an `exit.json` is reported MISSING (the control loop calls that runtime_lost).

The environment of a run is limited to PATH, HOME (its working folder), LANG and the run's own
values: nothing of the control plane's environment (secrets included) leaks into it.

Local processes have no watch API; `watch()` polls the few working folders this runtime owns.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codexk8s.adapters.local import supervisor
from codexk8s.domain.runtime import (
    FailureReason,
    Leftover,
    LogLine,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadRuntimeError,
    WorkloadSpec,
    WorkloadStatus,
)

STATE_FILE = "state.json"
CANCEL_FILE = "cancel-requested"
RUNTIME_NAME = "local"
_REASONS = {reason.value: reason for reason in FailureReason}


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of PID (field 22 of /proc/<pid>/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left
        return None
    return fields[19]


OUTPUT_CURSOR = "out:"


def _parse_record(raw: bytes) -> tuple[str, datetime, str]:
    """One `output.log` record: stream, read time, text (see supervisor.record)."""
    body = raw.rstrip(b"\n")
    head, _, text = body.partition(b" ")
    stream = "stderr" if head[:1] == b"e" else "stdout"
    try:
        at = datetime.fromtimestamp(float(head[1:]), UTC)
    except ValueError:
        at = datetime.now(UTC)
    return stream, at, text.decode("utf-8", "replace")


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class LocalRuntime:
    """Runs workloads as process groups on this machine."""

    name = RUNTIME_NAME

    def __init__(
        self,
        root: Path,
        *,
        path: str | None = None,
        poll_interval: float = 0.25,
        kill_grace_seconds: float = 10.0,
        installation: str = "",
    ) -> None:
        # Handles stored before installation folders existed still point into `base`.
        self.base = root
        self.root = root / installation if installation else root
        self.installation = installation
        self.path = path if path is not None else os.environ.get("PATH", "/usr/bin:/bin")
        self.poll_interval = poll_interval
        self.kill_grace_seconds = kill_grace_seconds
        # Our own children must be reaped, or they linger as zombies until we exit.
        self._children: dict[str, asyncio.subprocess.Process] = {}

    def _workdir(self, name: str, handle: WorkloadHandle | None = None) -> Path:
        stored = (handle.details.get("workdir") if handle is not None else None) or ""
        if (
            stored
            and Path(stored).name == name
            and Path(stored).parent.resolve().is_relative_to(self.base.resolve())
        ):
            return Path(stored)
        return self.root / name

    def _handle(self, name: str, state: Mapping[str, Any]) -> WorkloadHandle:
        return WorkloadHandle(
            runtime=RUNTIME_NAME,
            name=name,
            details={
                "pid": state["pid"],
                "start_time": state["start_time"],
                "workdir": str(self._workdir(name)),
            },
        )

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        workdir = self._workdir(spec.name)
        state = self._read_json(workdir / STATE_FILE)
        if state is not None:
            # Launched before (a restart between launch and its record): adopt, never start
            # twice, but only this installation's launch of this very run.
            if (
                state.get("installation", "") != self.installation
                or state.get("correlation_id", spec.correlation_id) != spec.correlation_id
            ):
                raise WorkloadRuntimeError(
                    f"the work folder {workdir} holds another run's workload; refusing to adopt it"
                )
            return self._handle(spec.name, state)
        if not spec.command:
            raise WorkloadRuntimeError(f"run {spec.run_id} has no command to execute")
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": self.path,
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            **spec.env,
            **spec.secret_env,
        }
        argv = [
            sys.executable, "-m", supervisor.__name__, str(workdir), str(spec.limit_seconds),
            str(self.kill_grace_seconds), "--", *spec.command,
        ]  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=workdir, env=env, start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            raise WorkloadRuntimeError(f"cannot start the supervisor: {exc}") from exc
        start_time = _process_start_time(process.pid) or ""
        state = {
            "pid": process.pid,
            "start_time": start_time,
            "run_id": spec.run_id,
            "correlation_id": spec.correlation_id,
            "installation": self.installation,
            "launched_at": time.time(),
        }
        temporary = workdir / (STATE_FILE + ".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, workdir / STATE_FILE)
        self._children[spec.name] = process
        asyncio.get_running_loop().create_task(self._reap(spec.name, process))
        return self._handle(spec.name, state)

    async def _reap(self, name: str, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        self._children.pop(name, None)

    def _status_of(
        self, name: str, run_id: int | None = None, handle: WorkloadHandle | None = None
    ) -> WorkloadStatus | None:
        workdir = self._workdir(name, handle)
        state = self._read_json(workdir / STATE_FILE)
        if state is None:
            return None
        run = int(state.get("run_id", run_id or 0))
        handle = WorkloadHandle(
            runtime=RUNTIME_NAME,
            name=name,
            details={
                "pid": state["pid"],
                "start_time": state["start_time"],
                "workdir": str(workdir),
            },
        )
        started = _utc(float(state.get("launched_at", 0)))
        outcome = self._read_json(workdir / supervisor.EXIT_FILE)
        if outcome is not None:
            code = int(outcome.get("exit_code", -1))
            reason = _REASONS.get(str(outcome.get("reason")))
            if (workdir / CANCEL_FILE).exists() and code != 0:
                reason = FailureReason.CANCELED
            phase = (
                WorkloadPhase.SUCCEEDED if code == 0 and reason is None else WorkloadPhase.FAILED
            )
            return WorkloadStatus(
                run_id=run, phase=phase, handle=handle, exit_code=code, reason=reason,
                message=outcome.get("message"), started_at=started,
                finished_at=_utc(float(outcome.get("finished_at", time.time()))),
            )  # fmt: skip
        alive = _process_start_time(int(state["pid"]))
        if alive is not None and alive == state.get("start_time"):
            return WorkloadStatus(
                run_id=run, phase=WorkloadPhase.RUNNING, handle=handle, started_at=started
            )
        # The exit record may land a moment after the process is gone: look once more.
        if (workdir / supervisor.EXIT_FILE).exists():
            return self._status_of(name, run_id, handle)
        if (workdir / CANCEL_FILE).exists():
            # Killed after the grace period, before the supervisor could write its record.
            return WorkloadStatus(
                run_id=run, phase=WorkloadPhase.FAILED, handle=handle, exit_code=-9,
                reason=FailureReason.CANCELED, started_at=started, finished_at=datetime.now(UTC),
            )  # fmt: skip
        return WorkloadStatus(
            run_id=run, phase=WorkloadPhase.MISSING, handle=handle, started_at=started,
            message="the run's process ended without recording an outcome",
        )  # fmt: skip

    async def status(self, handle: WorkloadHandle, run_id: int) -> WorkloadStatus:
        status = self._status_of(handle.name, run_id, handle)
        return status or WorkloadStatus(run_id=run_id, phase=WorkloadPhase.MISSING, handle=handle)

    async def list_workloads(self) -> list[WorkloadStatus]:
        if not self.root.is_dir():
            return []
        found = (
            self._status_of(entry.name) for entry in sorted(self.root.iterdir()) if entry.is_dir()
        )
        return [status for status in found if status is not None]

    async def watch(self) -> AsyncIterator[WorkloadStatus]:
        seen: dict[str, tuple[WorkloadPhase, int | None]] = {}
        while True:
            for status in await self.list_workloads():
                assert status.handle is not None
                key = (status.phase, status.exit_code)
                if seen.get(status.handle.name) != key:
                    seen[status.handle.name] = key
                    yield status
            await asyncio.sleep(self.poll_interval)

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        """Lines of stdout and stderr in the order the command wrote them, each with the time
        the supervisor read it; the cursor is `out:<byte offset>` into `output.log`. A run
        started by an older supervisor (two files) is read the old way (cursor
        "<stdout offset>:<stderr offset>")."""
        workdir = self._workdir(handle.name, handle)
        if (after and not after.startswith(OUTPUT_CURSOR)) or (
            (workdir / supervisor.STDOUT_FILE).exists()
            and not (workdir / supervisor.OUTPUT_FILE).exists()
        ):
            async for line in self._stream_two_files(workdir, follow=follow, after=after):
                yield line
            return
        offset = int(after[len(OUTPUT_CURSOR) :] or 0) if after else 0
        path = workdir / supervisor.OUTPUT_FILE
        while True:
            finished = (workdir / supervisor.EXIT_FILE).exists() or not (
                workdir / STATE_FILE
            ).exists()
            produced = False
            if path.exists():
                with path.open("rb") as output:
                    output.seek(offset)
                    data = output.read(1 << 20)
                end = data.rfind(b"\n") + 1  # the supervisor writes whole records only
                position = 0
                for raw in data[:end].splitlines(keepends=True):
                    position += len(raw)
                    stream, at, text = _parse_record(raw)
                    produced = True
                    yield LogLine(
                        stream=stream, line=text, ts=at,
                        cursor=f"{OUTPUT_CURSOR}{offset + position}",
                    )  # fmt: skip
                offset += position
            if produced:
                continue  # there may be more than one read's worth waiting
            if not follow or finished:
                return
            await asyncio.sleep(self.poll_interval)

    async def _stream_two_files(
        self, workdir: Path, *, follow: bool, after: str | None
    ) -> AsyncIterator[LogLine]:
        """The output of a supervisor from before `output.log`: stdout drained before stderr
        per poll (each stream's own order is kept)."""
        offsets = [0, 0]
        if after:
            out_offset, _, err_offset = after.partition(":")
            offsets = [int(out_offset or 0), int(err_offset or 0)]
        files = [
            (workdir / supervisor.STDOUT_FILE, "stdout"),
            (workdir / supervisor.STDERR_FILE, "stderr"),
        ]
        while True:
            finished = (workdir / supervisor.EXIT_FILE).exists() or not (
                workdir / STATE_FILE
            ).exists()
            produced = False
            for index, (path, stream) in enumerate(files):
                if not path.exists():
                    continue
                with path.open("rb") as handle_file:
                    handle_file.seek(offsets[index])
                    data = handle_file.read(1 << 20)
                # Only whole lines, unless the process is done (then the tail is complete).
                end = data.rfind(b"\n") + 1 if not finished else len(data)
                if end <= 0:
                    continue
                chunk, base = data[:end], offsets[index]
                now = datetime.now(UTC)
                position = 0
                for raw in chunk.splitlines(keepends=True):
                    position += len(raw)
                    offsets[index] = base + position
                    produced = True
                    yield LogLine(
                        stream=stream,
                        line=raw.rstrip(b"\r\n").decode("utf-8", "replace"),
                        ts=now,
                        cursor=f"{offsets[0]}:{offsets[1]}",
                    )
            if produced:
                continue  # there may be more than one read's worth waiting
            if not follow or finished:
                return
            await asyncio.sleep(self.poll_interval)

    async def cancel(self, handle: WorkloadHandle, *, grace_seconds: float = 10.0) -> None:
        workdir = self._workdir(handle.name, handle)
        state = self._read_json(workdir / STATE_FILE)
        if state is None or (workdir / supervisor.EXIT_FILE).exists():
            return
        (workdir / CANCEL_FILE).touch()
        pid = int(state["pid"])
        if _process_start_time(pid) != state.get("start_time"):
            return  # gone, or the pid belongs to someone else now
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if (workdir / supervisor.EXIT_FILE).exists() or _process_start_time(pid) is None:
                return
            await asyncio.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return

    async def cleanup(self, handle: WorkloadHandle) -> None:
        workdir = self._workdir(handle.name, handle)
        if workdir.is_dir() and workdir.resolve().is_relative_to(self.base.resolve()):
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def list_leftovers(self) -> list[Leftover]:
        if not self.root.is_dir():
            return []
        leftovers = []
        for entry in sorted(self.root.iterdir()):
            state = self._read_json(entry / STATE_FILE) if entry.is_dir() else None
            if state is None:
                continue
            leftovers.append(
                Leftover(
                    handle=WorkloadHandle(
                        runtime=RUNTIME_NAME, name=entry.name, details={"workdir": str(entry)}
                    ),
                    run_id=int(state["run_id"]) if "run_id" in state else None,
                    created_at=_utc(float(state.get("launched_at", 0))),
                )
            )
        return leftovers
