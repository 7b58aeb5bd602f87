"""`GET /api/v1/runs/{id}/logs.txt`: the whole stored log as a download, behind the same access
check as the other run routes."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from codexk8s import urls
from tests.web import test_api
from tests.web.test_api import OK_FOR_MEMBERS, World, auth, cookie_client, make_run, run_url, store

# The staff API tests' fixtures: the same people, roles and projects.
world = test_api.world
client = test_api.client


@pytest.mark.parametrize("role", list(OK_FOR_MEMBERS))
def test_only_those_who_see_the_run_download_it(
    client: TestClient, world: World, role: str
) -> None:
    run_id = make_run(world)
    store(run_id, 0, 3)
    answer = client.get(run_url(urls.API_RUN_LOG_TEXT, run_id), headers=auth(world, role))
    assert answer.status_code == OK_FOR_MEMBERS[role]
    if answer.status_code == 200:
        assert answer.text == "line 1\nline 2\nline 3\n"
    else:
        assert "line 1" not in answer.text


def test_the_download_is_the_whole_log_in_order(world: World) -> None:
    run_id = make_run(world)
    for start in range(0, 12_000, 4_000):  # more than one page of the stream
        store(run_id, start, 4_000)
    answer = cookie_client(world, "read").get(run_url(urls.API_RUN_LOG_TEXT, run_id))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["content-disposition"] == f'attachment; filename="run-{run_id}.log"'
    assert answer.text.splitlines() == [f"line {n}" for n in range(1, 12_001)]


def test_missing_and_foreign_runs_answer_the_same(client: TestClient, world: World) -> None:
    foreign = make_run(world, project_id=world.other_project_id)
    store(foreign, 0, 1)
    for run_id in (foreign, foreign + 1000, "x1"):
        answer = client.get(run_url(urls.API_RUN_LOG_TEXT, run_id), headers=auth(world, "read"))
        assert answer.status_code == 404 and "line" not in answer.text
