"""The Inbox's state: the questions and approval requests of waiting runs that the signed-in
person may answer, across their projects, and the count the navigation badge shows.

Who may answer what is decided by services.run_requests at every load and every answer; the
list reloads when any project changes (`InboxLive`, pushed by web/live.py), so an answer given
elsewhere (another tab, GitHub, the CLI) takes the request off every open inbox.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import reflex as rx

from codexk8s import urls
from codexk8s.domain.run_requests import RequestKind
from codexk8s.errors import CodexK8sError
from codexk8s.services import run_requests
from codexk8s.web.components import formatters as fmt
from codexk8s.web.live import INBOX, InboxLive, watch
from codexk8s.web.state.auth import AuthState


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A waiting request ready to show."""

    id: int
    run_id: int
    run_href: str
    project_key: str
    is_approval: bool
    text: str
    details: str
    options: list[str]
    who: str  # who may answer, in words
    asked_ago: str
    expires_in: str
    issue: str


def _item(row: run_requests.PendingRequest) -> InboxItem:
    return InboxItem(
        id=row.id,
        run_id=row.run_id,
        run_href=urls.run_page(row.run_id),
        project_key=row.project_key,
        is_approval=row.kind == RequestKind.APPROVAL.value,
        text=row.text,
        details=row.details or "",
        options=list(row.options),
        who="project admins" if row.policy == "owner" else "members with write access",
        asked_ago=fmt.relative(row.created_at),
        expires_in=fmt.timestamp(row.expires_at),
        issue=f"#{row.issue_number}" if row.issue_number is not None else "",
    )


class InboxState(rx.State):
    """The inbox page and the badge in the navigation."""

    items: list[InboxItem] = []
    count: int = 0
    error: str = ""
    notice: str = ""

    async def _reload(self) -> None:
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.items, self.count = [], 0
            return
        found = await asyncio.to_thread(run_requests.pending_requests_for, principal)
        self.items = [_item(row) for row in found]
        self.count = len(self.items)

    @rx.event
    async def load_inbox(self) -> None:
        """`on_load` of the Inbox page."""
        self.error = self.notice = ""
        await self._reload()

    @rx.event
    async def refresh(self, _version: int) -> None:
        """The live trigger (in the navigation of every page): link to the inbox token, reload."""
        await watch(self, InboxLive, INBOX)
        await self._reload()

    async def _answer(self, request_id: int, answer: str | None, approve: bool | None) -> None:
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.error, self.notice = "Sign in to answer.", ""
            return
        try:
            decision = await asyncio.to_thread(
                run_requests.answer_request, principal=principal,
                request_id=request_id, answer=answer, approve=approve, via="dashboard",
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            self.notice = {
                "answered": "Answered: the run goes on.",
                "approved": "Approved: the run goes on.",
                "denied": "Denied: the run stops and fails with your reason.",
            }.get(decision.status, "Done.")
            self.error = ""
        await self._reload()

    @rx.event
    async def answer(self, form_data: dict[str, str]) -> None:
        """The answer form of a question (`request_id`, `answer`)."""
        request_id = str(form_data.get("request_id", ""))
        if not request_id.isdigit():
            self.error = "That question is no longer here."
            return
        await self._answer(int(request_id), str(form_data.get("answer") or ""), None)

    @rx.event
    async def pick(self, request_id: int, option: str) -> None:
        """One of the options a question offered."""
        await self._answer(request_id, option, None)

    @rx.event
    async def decide(self, form_data: dict[str, str]) -> None:
        """The decision form of an approval (`request_id`, `decision`, `note`)."""
        request_id = str(form_data.get("request_id", ""))
        decision = form_data.get("decision")
        if not request_id.isdigit() or decision not in ("approve", "deny"):
            self.error = "Choose approve or deny."
            return
        note = str(form_data.get("note") or "").strip() or None
        await self._answer(int(request_id), note, decision == "approve")
