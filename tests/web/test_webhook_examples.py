"""Every captured GitHub payload of the handled events, signed, through the served app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from codexk8s.adapters.github.webhooks import sign
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import make_engine
from codexk8s.services import projects, repositories
from codexk8s.urls import WEBHOOK_GITHUB
from tests.conftest import TEST_SECRET_KEY, ServedApp, link_member
from tests.webhook_examples import example, examples, with_labels

EVENTS = ("issues", "pull_request", "pull_request_review", "issue_comment", "ping")
ATTACHED = "codertocat/hello-world"
# What a delivery that starts nothing may say about itself; anything else is a regression.
KNOWN_REASONS = {
    "not_a_trigger", "coordination_label", "modifier_label", "unsupported_action",
    "comment_recorded", "review_not_changes_requested", "no_stage_label", "nothing_to_cancel",
    "unknown_repository", "missing_label", "unsupported_event",
}  # fmt: skip


@pytest.fixture(scope="module")
def attached(served_app: ServedApp) -> ServedApp:
    engine = make_engine(served_app.database_url)
    with Session(engine) as session:
        if projects.get_by_key(session=session, key="examples") is None:
            projects.create_project(session=session, key="examples")
            repositories.add_repository(
                session=session, box=SecretBox(TEST_SECRET_KEY), project_key="examples",
                full_name="Codertocat/Hello-World",
            )  # fmt: skip
            session.commit()
            link_member("examples", engine=engine)
    engine.dispose()
    return served_app


def post(app: ServedApp, event: str, body: bytes, delivery: str) -> httpx.Response:
    return httpx.post(
        app.base_url + WEBHOOK_GITHUB,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(ServedApp.webhook_secret, body),
        },
        timeout=30,
    )


def test_every_example_gets_a_sensible_answer_then_is_a_duplicate(attached: ServedApp) -> None:
    sent = []
    for event in EVENTS:
        for index, payload in enumerate(examples(event)):
            body = json.dumps(payload).encode()
            delivery = f"example-{event}-{index}"
            response = post(attached, event, body, delivery)
            answer = response.json()
            where = f"{event}[{index}] {payload.get('action')}: {answer}"
            if event == "ping":
                assert response.status_code == 200, where
            else:
                assert response.status_code == 202, where
                assert answer["action"] == payload.get("action"), where
            assert answer["delivery_id"] == delivery and answer["event"] == event, where
            # None of the captured payloads carries a run:* or need:reviewer label.
            assert answer["runs"] == [], where
            repository = (payload.get("repository") or {}).get("full_name", "").lower()
            if event != "ping":
                expected = KNOWN_REASONS if repository == ATTACHED else {"unknown_repository"}
                assert answer["ignored"] in expected, where
            sent.append((event, body, delivery))
    assert len(sent) >= 70
    for event, body, delivery in sent:
        response = post(attached, event, body, delivery)
        assert response.status_code == 200 and response.json() == {
            "duplicate": True,
            "delivery_id": delivery,
        }


def test_labeled_example_starts_a_run_visible_to_the_cli(
    attached: ServedApp, tmp_path: Path
) -> None:
    payload = with_labels(example("issues", "labeled"), "issue", ["run:qa"], "run:qa")
    payload["issue"]["number"] = 4242
    file = tmp_path / "labeled.json"
    file.write_text(json.dumps(payload))
    env = {**attached.env, "CODEXK8S_PUBLIC_URL": attached.base_url}
    codexk8s = str(Path(sys.executable).parent / "codexk8s")
    replay = subprocess.run(
        [codexk8s, "webhook", "replay", str(file), "--event", "issues", "--delivery", "replayed-1"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    status, answer = replay.stdout.split(" ", 1)
    assert status == "202" and len(json.loads(answer)["runs"]) == 1

    listed = subprocess.run(
        [codexk8s, "runs", "list", "--project", "examples", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    (row,) = [r for r in rows if r["issue"] == 4242]
    assert (row["stage"], row["agent"]) == ("qa", "qa")
    # The served app's engine picks the run up at once. It has no model key, so the Codex run
    # fails at dispatch with `precondition`, before it takes a slot.
    assert row["status"] in {"pending", "failed"}
    deadline = time.monotonic() + 60
    while row["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.5)
        listed = subprocess.run(
            [codexk8s, "runs", "list", "--project", "examples", "--json"],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        row = next(
            json.loads(x) for x in listed.stdout.splitlines() if json.loads(x)["id"] == row["id"]
        )
    assert (row["status"], row["status_reason"]) == ("failed", "precondition")
    again = subprocess.run(
        [codexk8s, "webhook", "replay", str(file), "--event", "issues", "--delivery", "replayed-1"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.stdout.startswith("200 ") and '"duplicate":true' in again.stdout


def test_replay_with_a_wrong_secret_fails_loudly(attached: ServedApp, tmp_path: Path) -> None:
    file = tmp_path / "ping.json"
    file.write_text(json.dumps(example("ping")))
    env = {**os.environ, **attached.env, "WRONG": "not-the-secret"}
    codexk8s = str(Path(sys.executable).parent / "codexk8s")
    result = subprocess.run(
        [codexk8s, "webhook", "replay", str(file), "--event", "ping",
         "--url", attached.base_url + WEBHOOK_GITHUB, "--secret-env", "WRONG"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout.startswith("401 ")
