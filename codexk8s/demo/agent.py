"""The demo agent: a short local process that works like an agent run looks.

It prints what a Codex run prints (commands, their output, ANSI colours, warnings on stderr,
a summary), reports progress and its result to the control plane with the run's own token
(`CODEXK8S_RUN_ID`, `CODEXK8S_CALLBACK_URL`, `CODEXK8S_RUN_TOKEN`, as every workload gets them),
and touches nothing: no clone, no model, no push. Standard library only, so it starts at once.
`--pace` scales the pauses (1: about 15 seconds; tests set it low).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

GREEN, RED, YELLOW, CYAN, DIM, BOLD, RESET = (
    "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[2m", "\x1b[1m", "\x1b[0m",
)  # fmt: skip
MODEL = "gpt-5-codex"
BRANCH_PREFIX = "codex/issue-"


def _pace(argv: list[str]) -> float:
    if "--pace" in argv[:-1]:
        try:
            return max(0.0, float(argv[argv.index("--pace") + 1]))
        except ValueError:
            pass
    return 1.0


def _post(path: str, body: dict[str, object]) -> None:
    """Tell the control plane (progress, result); a demo without a callback just prints."""
    base, run_id = os.environ.get("CODEXK8S_CALLBACK_URL"), os.environ.get("CODEXK8S_RUN_ID")
    token = os.environ.get("CODEXK8S_RUN_TOKEN")
    if not (base and run_id and token):
        return
    if not base.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(  # noqa: S310 (the control plane's own http(s) URL)
        f"{base.rstrip('/')}/api/v1/agent/runs/{run_id}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()
    except OSError as exc:
        print(f"{YELLOW}warning:{RESET} could not report to the control plane: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip


def main(argv: list[str]) -> int:
    pace = _pace(argv)
    run_id = os.environ.get("CODEXK8S_RUN_ID", "?")
    branch = f"{BRANCH_PREFIX}1"  # the captured issue's number

    def say(text: str, *, err: bool = False, pause: float = 0.35) -> None:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
        time.sleep(pause * pace)

    def command(text: str, exit_code: int = 0) -> None:
        say(f"{BOLD}$ {text}{RESET}", pause=0.5)
        _post("events", {"kind": "command", "message": text, "exit_code": exit_code})

    say(f"{CYAN}codexk8s demo agent{RESET} · run {run_id} · stage dev · model {MODEL}")
    say(f"{DIM}This is a scripted demo: nothing is cloned, pushed or sent to a model.{RESET}")
    command("git clone --depth 50 https://github.com/codexk8s-demo/hello-world workspace")
    say("Cloning into 'workspace'...", err=True, pause=0.2)
    say("Receiving objects: 100% (42/42), 9.81 KiB | 9.81 MiB/s, done.", err=True)
    command(f"git checkout -b {branch}")
    say(f"Switched to a new branch '{branch}'", err=True)
    say("agent: reading the issue “Spelling error in the README file”", pause=0.8)
    command('rg -n "teh|recieve" README.md')
    say(f"{GREEN}README.md{RESET}:3:This is teh Hello World repository.")
    say(f"{GREEN}README.md{RESET}:9:You will recieve a greeting.")
    say("agent: two misspellings in README.md; fixing both", pause=0.8)
    command("apply_patch README.md")
    say("Success. Updated the following files:")
    say(f"{YELLOW}M{RESET} README.md")
    _post("events", {"kind": "files", "message": "README.md", "files": ["README.md"]})
    command("make test")
    for name in ("test_greeting", "test_readme_links", "test_spelling"):
        say(f"tests/test_docs.py::{name} {GREEN}PASSED{RESET}", pause=0.25)
    say(f"{YELLOW}warning:{RESET} pytest-cov is not installed; coverage skipped", err=True)
    say(f"{GREEN}{BOLD}3 passed{RESET} in 0.41s")
    command('git commit -am "Fix two misspellings in the README"')
    say(f"[{branch} 4f2a9c1] Fix two misspellings in the README")
    say(" 1 file changed, 2 insertions(+), 2 deletions(-)")
    command(f"git push -u origin {branch}")
    say(f"{DIM}(demo: nothing is pushed){RESET}", err=True)
    _post("events", {"kind": "push", "message": branch})
    summary = (
        "Fixed two misspellings in README.md (“teh” → “the”, “recieve” → “receive”) and ran "
        "the documentation tests (3 passed)."
    )
    say(f"tokens used: {BOLD}18,432{RESET} input ({DIM}12,288 cached{RESET}) · 1,904 output")
    say(f"{BOLD}summary:{RESET} {summary}", pause=0.1)
    _post(
        "result",
        {
            "outcome": "succeeded",
            "summary": summary,
            "branch": branch,
            "base_branch": "main",
            "head_sha": "4f2a9c1e0b5d7a3c9e8f6b2d1a0c4e7f9b3d5a1c",
            "changed_files": ["README.md"],
            "pr_title": "Fix two misspellings in the README",
            "pr_body": summary,
            "model": MODEL,
            "usage": {"input": 18432, "cached": 12288, "output": 1904, "reasoning": 640},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
