"""The local runtime with real child processes: outcome, logs, cancel, timeout, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.domain.runtime import (
    FailureReason,
    LogLine,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadRuntimeError,
    WorkloadSpec,
)


def spec(run_id: int, code: str, *, timeout: int = 60, **env: str) -> WorkloadSpec:
    return WorkloadSpec(
        run_id=run_id, correlation_id=f"c{run_id}", project_key="p", lineage=f"p/{run_id}",
        command=(sys.executable, "-c", code), env=env, timeout_seconds=timeout,
    )  # fmt: skip


async def wait_for(runtime: LocalRuntime, handle: WorkloadHandle, run_id: int, limit: float = 20):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = await runtime.status(handle, run_id)
        if status.phase.is_finished:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def collect(runtime: LocalRuntime, handle: WorkloadHandle, **kwargs: object) -> list[LogLine]:
    return [line async for line in runtime.stream_logs(handle, **kwargs)]  # type: ignore[arg-type]


@pytest.fixture
def runtime(tmp_path: Path) -> LocalRuntime:
    return LocalRuntime(tmp_path / "runs", poll_interval=0.05, kill_grace_seconds=1)


async def test_success_with_stdout_and_stderr_in_the_order_written(runtime: LocalRuntime) -> None:
    """Issue #16: stdout and stderr come back interleaved as the command wrote them (the old
    reader drained stdout before stderr within each poll), each line with its own time."""
    code = (
        "import sys, time\n"
        "for i in range(3):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.02)\n"
        "print('last line without a newline', end='', flush=True)"
    )
    handle = await runtime.launch(spec(1, code))
    status = await wait_for(runtime, handle, 1)
    assert (status.phase, status.exit_code, status.reason) == (WorkloadPhase.SUCCEEDED, 0, None)
    lines = await collect(runtime, handle, follow=False)
    assert [(line.stream, line.line) for line in lines] == [
        ("stdout", "out 0"), ("stderr", "err 0"), ("stdout", "out 1"), ("stderr", "err 1"),
        ("stdout", "out 2"), ("stderr", "err 2"), ("stdout", "last line without a newline"),
    ]  # fmt: skip
    stamps = [line.ts for line in lines]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # read times, not one poll's
    # Any line's cursor resumes right after it (a restarted control plane reads on from there).
    rest = await collect(runtime, handle, follow=False, after=lines[3].cursor)
    assert [line.line for line in rest] == [line.line for line in lines[4:]]


async def test_a_run_from_before_output_log_is_read_from_its_two_files(tmp_path: Path) -> None:
    """A run started by an older supervisor (stdout.log and stderr.log) and adopted after an
    upgrade is still read, with its old cursors."""
    runtime = LocalRuntime(tmp_path / "runs", poll_interval=0.05)
    handle = await runtime.launch(spec(30, "print('x')"))
    await wait_for(runtime, handle, 30)
    workdir = Path(handle.name) if Path(handle.name).is_absolute() else None
    folder = workdir or next((tmp_path / "runs").rglob("exit.json")).parent
    (folder / "output.log").unlink()
    (folder / "stdout.log").write_bytes(b"old out\n")
    (folder / "stderr.log").write_bytes(b"old err\n")
    lines = await collect(runtime, handle, follow=False)
    assert [(line.stream, line.line) for line in lines] == [
        ("stdout", "old out"), ("stderr", "old err"),
    ]  # fmt: skip
    assert lines[0].cursor == "8:0"


async def test_failure_reports_the_exit_code(runtime: LocalRuntime) -> None:
    handle = await runtime.launch(spec(2, "raise SystemExit(3)"))
    status = await wait_for(runtime, handle, 2)
    assert (status.phase, status.exit_code, status.reason) == (
        WorkloadPhase.FAILED, 3, FailureReason.EXIT_CODE,
    )  # fmt: skip


async def test_missing_command_fails_with_runtime_error(runtime: LocalRuntime) -> None:
    broken = WorkloadSpec(run_id=3, correlation_id="c", project_key="p", lineage="l",
                          command=("/nonexistent/binary",))  # fmt: skip
    status = await wait_for(runtime, await runtime.launch(broken), 3)
    assert status.phase is WorkloadPhase.FAILED and status.reason is FailureReason.RUNTIME_ERROR
    assert (
        "cannot start"
        in (await collect(runtime, await runtime.launch(broken), follow=False))[0].line
    )


async def test_launch_twice_adopts_instead_of_starting_again(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    marker = tmp_path / "starts"
    code = f"open({str(marker)!r}, 'a').write('x')\nimport time; time.sleep(0.5)"
    first = await runtime.launch(spec(4, code))
    second = await runtime.launch(spec(4, code))
    assert first == second
    await wait_for(runtime, first, 4)
    assert marker.read_text() == "x"


async def test_follow_streams_lines_as_they_are_written_and_resumes(runtime: LocalRuntime) -> None:
    code = (
        "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)"
    )
    handle = await runtime.launch(spec(5, code))
    seen: list[LogLine] = []
    async for line in runtime.stream_logs(handle, follow=True):
        seen.append(line)
        if len(seen) == 2:
            break
    rest = await collect(runtime, handle, follow=True, after=seen[-1].cursor)
    assert [line.line for line in seen + rest] == [f"line {i}" for i in range(5)]
    assert await collect(runtime, handle, follow=False, after=rest[-1].cursor) == []


async def test_cancel_stops_the_process_group(runtime: LocalRuntime, tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('started', flush=True)\ntime.sleep(60)"
    )
    handle = await runtime.launch(spec(6, code))
    async for line in runtime.stream_logs(handle, follow=True):
        assert line.line == "started"
        break
    await runtime.cancel(handle, grace_seconds=2)
    status = await wait_for(runtime, handle, 6)
    assert status.phase is WorkloadPhase.FAILED and status.reason is FailureReason.CANCELED
    pgid = int(handle.details["pid"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the grandchild got SIGTERM too; give it a moment
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


async def test_cancel_kills_what_ignores_sigterm(runtime: LocalRuntime) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    handle = await runtime.launch(spec(7, code))
    async for _ in runtime.stream_logs(handle, follow=True):
        break
    started = time.monotonic()
    await runtime.cancel(handle, grace_seconds=0.5)
    status = await wait_for(runtime, handle, 7)
    assert status.reason is FailureReason.CANCELED
    assert time.monotonic() - started < 10


async def test_timeout_is_enforced_by_the_supervisor(runtime: LocalRuntime) -> None:
    handle = await runtime.launch(spec(8, "import time; time.sleep(60)", timeout=1))
    status = await wait_for(runtime, handle, 8)
    assert status.phase is WorkloadPhase.FAILED and status.reason is FailureReason.TIMEOUT


async def test_a_new_runtime_instance_adopts_a_running_process(tmp_path: Path) -> None:
    first = LocalRuntime(tmp_path / "runs", poll_interval=0.05)
    handle = await first.launch(
        spec(9, "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')")
    )
    restarted = LocalRuntime(tmp_path / "runs", poll_interval=0.05)
    statuses = await restarted.list_workloads()
    assert [(s.run_id, s.phase) for s in statuses] == [(9, WorkloadPhase.RUNNING)]
    status = await wait_for(restarted, handle, 9)
    assert status.phase is WorkloadPhase.SUCCEEDED
    assert [line.line for line in await collect(restarted, handle, follow=False)] == ["a", "b"]


async def test_a_process_killed_behind_our_back_is_missing(runtime: LocalRuntime) -> None:
    handle = await runtime.launch(spec(10, "import time; print('x', flush=True); time.sleep(60)"))
    async for _ in runtime.stream_logs(handle, follow=True):
        break
    os.killpg(int(handle.details["pid"]), signal.SIGKILL)
    status = await wait_for(runtime, handle, 10)
    assert status.phase is WorkloadPhase.MISSING


async def test_environment_is_limited_to_the_run(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_SECRET_KEY", "control-plane-secret")
    code = "import os, json; print(json.dumps(sorted(os.environ)))"
    handle = await runtime.launch(spec(11, code, CODEXK8S_RUN_ID="11"))
    await wait_for(runtime, handle, 11)
    (line,) = await collect(runtime, handle, follow=False)
    names = set(__import__("json").loads(line.line))
    assert "CODEXK8S_RUN_ID" in names and "CODEXK8S_SECRET_KEY" not in names
    assert names <= {"PATH", "HOME", "LANG", "CODEXK8S_RUN_ID", "LC_CTYPE"}


async def test_watch_reports_changes_and_cleanup_removes_the_folder(runtime: LocalRuntime) -> None:
    handle = await runtime.launch(spec(12, "import time; time.sleep(0.3)"))
    phases = []
    async for status in runtime.watch():
        phases.append(status.phase)
        if status.phase.is_finished:
            break
    assert phases[0] is WorkloadPhase.RUNNING and phases[-1] is WorkloadPhase.SUCCEEDED
    await runtime.cleanup(handle)
    assert await runtime.list_workloads() == []


async def test_a_new_database_next_to_old_run_folders_starts_afresh(tmp_path: Path) -> None:
    """Run 1 of a new installation (a new database, the same data folder) never adopts the old
    installation's run 1 and never shows its output as its own."""
    old = LocalRuntime(tmp_path / "runs", poll_interval=0.05, installation="old")
    old_handle = await old.launch(spec(1, "print('old run 1')"))
    await wait_for(old, old_handle, 1)

    new = LocalRuntime(tmp_path / "runs", poll_interval=0.05, installation="new")
    assert await new.list_workloads() == []
    assert await new.list_leftovers() == []
    handle = await new.launch(spec(1, "print('new run 1')"))
    assert handle != old_handle
    await wait_for(new, handle, 1)
    assert [line.line for line in await collect(new, handle, follow=False)] == ["new run 1"]
    assert [s.run_id for s in await new.list_workloads()] == [1]
    # The old installation still finds (and could clean) its own.
    assert [line.line for line in await collect(old, old_handle, follow=False)] == ["old run 1"]


async def test_another_runs_work_folder_is_not_adopted(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path / "runs", poll_interval=0.05, installation="one")
    handle = await runtime.launch(spec(2, "print('first')"))
    await wait_for(runtime, handle, 2)
    other = WorkloadSpec(
        run_id=2, correlation_id="another-run", project_key="p", lineage="p/2",
        command=(sys.executable, "-c", "print('second')"),
    )  # fmt: skip
    with pytest.raises(WorkloadRuntimeError, match="another run's workload"):
        await runtime.launch(other)


async def test_handles_stored_before_installation_folders_still_work(tmp_path: Path) -> None:
    legacy = LocalRuntime(tmp_path / "runs", poll_interval=0.05)
    handle = await legacy.launch(spec(3, "print('kept')"))
    upgraded = LocalRuntime(tmp_path / "runs", poll_interval=0.05, installation="new")
    status = await wait_for(upgraded, handle, 3)
    assert status.phase is WorkloadPhase.SUCCEEDED
    assert [line.line for line in await collect(upgraded, handle, follow=False)] == ["kept"]
    await upgraded.cleanup(handle)
    assert not await asyncio.to_thread(Path(handle.details["workdir"]).exists)
