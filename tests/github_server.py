"""A loopback stand-in for GitHub's OAuth web flow and the two REST endpoints sign-in reads.

It speaks GitHub's documented wire format: `GET /login/oauth/authorize` sends the browser back to
the redirect URI with `code` and `state` (it approves at once for the configured user, or answers
`error=access_denied` when told to deny); `POST /login/oauth/access_token` takes the form
parameters client_id, client_secret, code, redirect_uri and code_verifier, answers JSON when asked
with `Accept: application/json` (form-encoded otherwise) and, like GitHub, reports a bad code with
HTTP 200 and an `error` field; `GET /user` and `GET /user/emails` need the access token as a bearer.
Codes are single-use and bound to the S256 PKCE challenge the authorize request carried.

It also serves the REST endpoints the control plane writes to (repository, issue comments,
labels, pulls, hooks, hook deliveries and redelivery attempts), authorised by repository tokens
(`add_repo`), with the rate-limit headers GitHub sends. Every REST call is recorded in `calls`;
`inject` makes the next matching calls fail (403 secondary limit with Retry-After, 429, 5xx) and
`exhaust_primary_limit` makes one answer report `X-RateLimit-Remaining: 0`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from codexk8s.domain.repository_provider import HookConfig
from tests.conftest import serve_in_thread

CLIENT_ID = "Iv1.fakeclientid0001"
CLIENT_SECRET = "fake-client-secret-0001"
DOCS = "https://docs.github.com/apps/oauth-apps"


def email_entry(
    email: str, *, primary: bool = True, verified: bool = True, visibility: str | None = "public"
) -> dict[str, Any]:
    """One element of GitHub's `GET /user/emails` answer."""
    return {"email": email, "primary": primary, "verified": verified, "visibility": visibility}


@dataclass
class _Grant:
    redirect_uri: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    used: bool = False


@dataclass
class Fault:
    """Answer the next TIMES calls whose `METHOD path` contains MATCH with STATUS."""

    match: str
    status: int
    headers: dict[str, str]
    message: str
    times: int


@dataclass
class FakeRepo:
    owner: str
    name: str
    default_branch: str = "main"
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    issue_labels: dict[int, list[str]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    hooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.values() if c["number"] == number]


_ids = itertools.count(1000)


@dataclass
class FakeGitHub:
    """The fake's state: who signs in, and everything it was asked (for assertions)."""

    login: str = "octocat"
    user_id: int = 583231
    emails: list[dict[str, Any]] = field(
        default_factory=lambda: [email_entry("octocat@github.com")]
    )
    deny: bool = False
    base_url: str = ""
    grants: dict[str, _Grant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> scope
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # REST side: repositories by lower-case full name, tokens → {repo full name: permissions}.
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    repo_tokens: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    call_times: list[float] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    primary_reset_in: float | None = None
    next_number: int = 500

    @property
    def oauth_url(self) -> str:
        return f"{self.base_url}/login/oauth"

    # --- handlers -------------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        params = request.query_params
        if params.get("client_id") != CLIENT_ID:
            return PlainTextResponse("unknown client_id", status_code=404)
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            return PlainTextResponse("redirect_uri required by this fake", status_code=400)
        state = params.get("state")
        answer: dict[str, str] = {}
        if self.deny:
            answer = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": DOCS,
            }
        else:
            code = secrets.token_hex(10)
            self.grants[code] = _Grant(
                redirect_uri=redirect_uri,
                scope=params.get("scope", ""),
                code_challenge=params.get("code_challenge"),
                code_challenge_method=params.get("code_challenge_method"),
            )
            answer = {"code": code}
        if state is not None:
            answer["state"] = state
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    def _token_answer(self, request: Request, values: dict[str, str]) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(values)
        return PlainTextResponse(urlencode(values), media_type="application/x-www-form-urlencoded")

    def _token_error(self, request: Request, error: str, description: str) -> Response:
        values = {"error": error, "error_description": description, "error_uri": DOCS}
        return self._token_answer(request, values)

    async def access_token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self._token_error(
                request, "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )  # fmt: skip
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.used:
            if grant is not None:
                grant.used = True
            return self._token_error(
                request, "bad_verification_code", "The code passed is incorrect or expired."
            )
        grant.used = True
        if form.get("redirect_uri") and form["redirect_uri"] != grant.redirect_uri:
            return self._token_error(
                request, "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )  # fmt: skip
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if grant.code_challenge_method != "S256" or expected != grant.code_challenge:
                return self._token_error(
                    request, "bad_verification_code", "The code_verifier does not match."
                )
        token = "gho_" + secrets.token_hex(18)
        self.tokens[token] = grant.scope
        scope = ",".join(grant.scope.split())
        return self._token_answer(
            request, {"access_token": token, "scope": scope, "token_type": "bearer"}
        )

    def _authorized_scope(self, request: Request) -> str | None:
        self.api_requests.append((request.url.path, dict(request.headers)))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.tokens.get(token.strip())

    def _bad_credentials(self) -> Response:
        return JSONResponse(
            {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            status_code=401,
        )

    async def user(self, request: Request) -> Response:
        if self._authorized_scope(request) is None:
            return self._bad_credentials()
        return JSONResponse(
            {
                "login": self.login,
                "id": self.user_id,
                "node_id": "MDQ6VXNlcjE=",
                "type": "User",
                "site_admin": False,
                "name": "The Octocat",
                "email": None,
            }
        )

    async def user_emails(self, request: Request) -> Response:
        scope = self._authorized_scope(request)
        if scope is None:
            return self._bad_credentials()
        if not {"user", "user:email"} & set(scope.split()):
            # GitHub hides the endpoint from tokens without the scope.
            return JSONResponse(
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
                status_code=404,
            )
        return JSONResponse(self.emails)

    # --- REST: set-up and assertions -------------------------------------------------------------

    def add_repo(
        self, full_name: str, *, token: str, admin: bool = True, push: bool = True
    ) -> FakeRepo:
        owner, name = full_name.lower().split("/")
        repo = self.repos.setdefault(f"{owner}/{name}", FakeRepo(owner, name))
        self.repo_tokens.setdefault(token, {})[repo.full_name] = {
            "admin": admin, "push": push, "pull": True,
        }  # fmt: skip
        return repo

    def inject(
        self, match: str, status: int, *, headers: dict[str, str] | None = None,
        message: str = "injected", times: int = 1,
    ) -> None:  # fmt: skip
        self.faults.append(Fault(match, status, headers or {}, message, times))

    def exhaust_primary_limit(self, reset_in: float) -> None:
        """The next REST answer says the primary limit is used up until RESET_IN seconds."""
        self.primary_reset_in = reset_in

    def rest_calls(
        self, method: str | None = None, contains: str = ""
    ) -> list[tuple[str, str, Any]]:
        return [c for c in self.calls if (method is None or c[0] == method) and contains in c[1]]

    def add_delivery(
        self, repo: FakeRepo, hook_id: int, *, guid: str, status_code: int, age_seconds: float = 60,
        redelivery: bool = False, event: str = "issues",
    ) -> dict[str, Any]:  # fmt: skip
        delivered = time.gmtime(time.time() - age_seconds)
        entry = {
            "id": next(_ids), "guid": guid,
            "delivered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", delivered),
            "redelivery": redelivery, "duration": 0.1,
            "status": "OK" if 200 <= status_code < 300 else "Failed",
            "status_code": status_code, "event": event, "action": "labeled",
            "installation_id": None, "repository_id": 1,
        }  # fmt: skip
        repo.deliveries.setdefault(hook_id, []).insert(0, entry)
        return entry

    def add_hook(self, repo: FakeRepo, config: HookConfig) -> int:
        hook_id = next(_ids)
        repo.hooks[hook_id] = self._hook_json(hook_id, repo, {"name": "web", **_hook_wire(config)})
        return hook_id

    # --- REST: plumbing ---------------------------------------------------------------------------

    def _json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        remaining = "4999"
        reset = int(time.time()) + 3600
        if self.primary_reset_in is not None:
            remaining, reset = "0", int(time.time() + self.primary_reset_in + 0.999)
            self.primary_reset_in = None
        rate = {
            "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": remaining,
            "X-RateLimit-Reset": str(reset), "X-RateLimit-Resource": "core",
        }  # fmt: skip
        if status == 204:
            return Response(status_code=204, headers={**rate, **(headers or {})})
        return JSONResponse(data, status_code=status, headers={**rate, **(headers or {})})

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        return self._json(body, status, headers)

    async def _rest(
        self, request: Request
    ) -> tuple[FakeRepo | None, dict[str, bool], Response | None]:
        body: Any = None
        if request.method in ("POST", "PATCH", "PUT"):
            raw = await request.body()
            body = json.loads(raw) if raw else None
        self.calls.append((request.method, request.url.path, body))
        self.call_times.append(time.monotonic())
        signature = f"{request.method} {request.url.path}"
        for fault in self.faults:
            if fault.times > 0 and fault.match in signature:
                fault.times -= 1
                return None, {}, self._error(fault.status, fault.message, fault.headers)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        grants = (
            self.repo_tokens.get(token.strip()) if scheme.lower() in ("bearer", "token") else None
        )
        if grants is None:
            return None, {}, self._error(401, "Bad credentials")
        full_name = f"{request.path_params['owner']}/{request.path_params['repo']}".lower()
        repo = self.repos.get(full_name)
        if repo is None or full_name not in grants:
            return None, {}, self._error(404, "Not Found")
        return repo, grants[full_name], None

    # --- REST: endpoints --------------------------------------------------------------------------

    async def get_repo(self, request: Request) -> Response:
        repo, permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        return self._json({
            "id": 1, "name": repo.name, "full_name": repo.full_name, "private": False,
            "default_branch": repo.default_branch, "permissions": permissions,
        })  # fmt: skip

    def _comment_json(self, repo: FakeRepo, comment: dict[str, Any]) -> dict[str, Any]:
        url = f"https://github.com/{repo.full_name}/issues/{comment['number']}"
        return {
            "id": comment["id"],
            "body": comment["body"],
            "html_url": f"{url}#issuecomment-{comment['id']}",
            "user": {"login": "codexk8s"},
        }

    async def issue_comments(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        number = int(request.path_params["number"])
        if request.method == "GET":
            per_page = int(request.query_params.get("per_page", 30))
            page = int(request.query_params.get("page", 1))
            items = repo.comments_on(number)[(page - 1) * per_page : page * per_page]
            return self._json([self._comment_json(repo, c) for c in items])
        body = (self.calls[-1][2] or {}).get("body")
        if not body:
            return self._error(422, "Validation Failed")
        comment = {"id": next(_ids), "number": number, "body": body}
        repo.comments[comment["id"]] = comment
        return self._json(self._comment_json(repo, comment), 201)

    async def edit_comment(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        comment = repo.comments.get(int(request.path_params["comment_id"]))
        if comment is None:
            return self._error(404, "Not Found")
        comment["body"] = (self.calls[-1][2] or {}).get("body", comment["body"])
        return self._json(self._comment_json(repo, comment))

    async def issue_labels(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        labels = repo.issue_labels.setdefault(int(request.path_params["number"]), [])
        for name in (self.calls[-1][2] or {}).get("labels", []):
            if name not in labels:
                labels.append(name)
        return self._json([{"name": n} for n in labels])

    async def issue_label(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        labels = repo.issue_labels.setdefault(int(request.path_params["number"]), [])
        name = request.path_params["name"]
        if name not in labels:
            return self._error(404, "Label does not exist")
        labels.remove(name)
        return self._json([{"name": n} for n in labels])

    async def repo_labels(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        data = self.calls[-1][2] or {}
        if data.get("name") in repo.labels:
            return self._error(422, "Validation Failed")
        repo.labels[data["name"]] = data
        return self._json(data, 201)

    async def repo_label(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        label = repo.labels.get(request.path_params["name"])
        return self._json(label) if label else self._error(404, "Not Found")

    def _pull_json(self, repo: FakeRepo, pull: dict[str, Any]) -> dict[str, Any]:
        return {
            "number": pull["number"], "state": pull["state"], "title": pull["title"],
            "body": pull["body"], "head": {"ref": pull["head"]}, "base": {"ref": pull["base"]},
            "html_url": f"https://github.com/{repo.full_name}/pull/{pull['number']}",
        }  # fmt: skip

    async def pulls(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        if request.method == "GET":
            state = request.query_params.get("state", "open")
            head = request.query_params.get("head")
            found = [
                p for p in repo.pulls.values()
                if p["state"] == state and (head is None or f"{repo.owner}:{p['head']}" == head)
            ]  # fmt: skip
            return self._json([self._pull_json(repo, p) for p in found])
        data = self.calls[-1][2] or {}
        if any(p["head"] == data["head"] and p["state"] == "open" for p in repo.pulls.values()):
            return self._error(422, "A pull request already exists")
        self.next_number += 1
        pull = {
            "number": self.next_number,
            "state": "open",
            "title": data["title"],
            "body": data.get("body", ""),
            "head": data["head"],
            "base": data["base"],
        }
        repo.pulls[pull["number"]] = pull
        return self._json(self._pull_json(repo, pull), 201)

    async def pull(self, request: Request) -> Response:
        repo, _permissions, refusal = await self._rest(request)
        if refusal:
            return refusal
        assert repo is not None
        pull = repo.pulls.get(int(request.path_params["number"]))
        if pull is None:
            return self._error(404, "Not Found")
        for key in ("title", "body", "state"):
            if key in (self.calls[-1][2] or {}):
                pull[key] = self.calls[-1][2][key]
        return self._json(self._pull_json(repo, pull))

    def _hook_json(self, hook_id: int, repo: FakeRepo, data: dict[str, Any]) -> dict[str, Any]:
        config = dict(data.get("config") or {})
        secret = config.pop("secret", None)
        if secret:
            config["secret"] = "********"  # GitHub never shows a hook's secret back
        return {
            "type": "Repository", "id": hook_id, "name": "web", "active": data.get("active", True),
            "events": data.get("events", ["push"]), "config": config, "_secret": secret,
            "url": f"https://api.github.com/repos/{repo.full_name}/hooks/{hook_id}",
        }  # fmt: skip

    def _hooks_allowed(self, permissions: dict[str, bool]) -> Response | None:
        if not permissions.get("admin"):
            return self._error(403, "Resource not accessible by personal access token")
        return None

    async def hooks(self, request: Request) -> Response:
        repo, permissions, refusal = await self._rest(request)
        if refusal or (refusal := self._hooks_allowed(permissions)):
            return refusal
        assert repo is not None
        if request.method == "GET":
            return self._json(
                [{k: v for k, v in h.items() if k != "_secret"} for h in repo.hooks.values()]
            )
        hook_id = next(_ids)
        repo.hooks[hook_id] = self._hook_json(hook_id, repo, self.calls[-1][2] or {})
        return self._json({k: v for k, v in repo.hooks[hook_id].items() if k != "_secret"}, 201)

    async def hook(self, request: Request) -> Response:
        repo, permissions, refusal = await self._rest(request)
        if refusal or (refusal := self._hooks_allowed(permissions)):
            return refusal
        assert repo is not None
        hook_id = int(request.path_params["hook_id"])
        if hook_id not in repo.hooks:
            return self._error(404, "Not Found")
        repo.hooks[hook_id] = self._hook_json(hook_id, repo, self.calls[-1][2] or {})
        return self._json({k: v for k, v in repo.hooks[hook_id].items() if k != "_secret"})

    async def hook_deliveries(self, request: Request) -> Response:
        repo, permissions, refusal = await self._rest(request)
        if refusal or (refusal := self._hooks_allowed(permissions)):
            return refusal
        assert repo is not None
        hook_id = int(request.path_params["hook_id"])
        if hook_id not in repo.hooks:
            return self._error(404, "Not Found")
        per_page = int(request.query_params.get("per_page", 30))
        return self._json(repo.deliveries.get(hook_id, [])[:per_page])

    async def redeliver(self, request: Request) -> Response:
        repo, permissions, refusal = await self._rest(request)
        if refusal or (refusal := self._hooks_allowed(permissions)):
            return refusal
        assert repo is not None
        hook_id = int(request.path_params["hook_id"])
        delivery_id = int(request.path_params["delivery_id"])
        original = next(
            (d for d in repo.deliveries.get(hook_id, []) if d["id"] == delivery_id), None
        )
        if original is None:
            return self._error(404, "Not Found")
        # GitHub sends the same GUID again and lists the attempt as a redelivery.
        self.add_delivery(repo, hook_id, guid=original["guid"], status_code=200, age_seconds=0,
                          redelivery=True, event=original["event"])  # fmt: skip
        return self._json({}, 202)

    def app(self) -> Starlette:
        repo = "/repos/{owner}/{repo}"
        return Starlette(
            routes=[
                Route("/login/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/user", self.user, methods=["GET"]),
                Route("/user/emails", self.user_emails, methods=["GET"]),
                Route(repo, self.get_repo, methods=["GET"]),
                Route(repo + "/issues/comments/{comment_id:int}", self.edit_comment,
                      methods=["PATCH"]),
                Route(repo + "/issues/{number:int}/comments", self.issue_comments,
                      methods=["GET", "POST"]),
                Route(repo + "/issues/{number:int}/labels", self.issue_labels, methods=["POST"]),
                Route(repo + "/issues/{number:int}/labels/{name}", self.issue_label,
                      methods=["DELETE"]),
                Route(repo + "/labels", self.repo_labels, methods=["POST"]),
                Route(repo + "/labels/{name}", self.repo_label, methods=["GET"]),
                Route(repo + "/pulls", self.pulls, methods=["GET", "POST"]),
                Route(repo + "/pulls/{number:int}", self.pull, methods=["PATCH"]),
                Route(repo + "/hooks", self.hooks, methods=["GET", "POST"]),
                Route(repo + "/hooks/{hook_id:int}", self.hook, methods=["PATCH"]),
                Route(repo + "/hooks/{hook_id:int}/deliveries", self.hook_deliveries,
                      methods=["GET"]),
                Route(repo + "/hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts",
                      self.redeliver, methods=["POST"]),
            ]
        )  # fmt: skip


def _hook_wire(config: HookConfig) -> dict[str, Any]:
    return {
        "active": config.active, "events": list(config.events),
        "config": {"url": config.url, "content_type": config.content_type,
                   "secret": config.secret, "insecure_ssl": "0"},
    }  # fmt: skip


@contextmanager
def running_github(fake: FakeGitHub | None = None) -> Iterator[FakeGitHub]:
    """Serve FAKE on a free loopback port for the duration of the block."""
    fake = fake or FakeGitHub()
    with serve_in_thread(fake.app()) as base_url:
        fake.base_url = base_url
        yield fake
