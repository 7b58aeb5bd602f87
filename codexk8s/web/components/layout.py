"""The page frame: navigation sidebar, top bar with sign-in or the signed-in user, and the
content area."""

from __future__ import annotations

from typing import Any

import reflex as rx

from codexk8s import urls
from codexk8s.web.components.buttons import icon_label_button
from codexk8s.web.components.status import STATUS_CSS
from codexk8s.web.live import InboxLive, refresh_trigger
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.inbox import InboxState

NAV_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("Overview", urls.OVERVIEW, "layout-dashboard"),
    ("Projects", urls.PROJECTS, "folder-git-2"),
    ("Runs", urls.RUNS, "play"),
    ("Agents", urls.AGENTS, "bot"),
    ("Users", urls.USERS, "users"),
    ("Audit", urls.AUDIT, "scroll-text"),
    ("Inbox", urls.INBOX, "inbox"),
)


def _is_current(href: str) -> rx.Var:
    """Whether the page shown is HREF's (a run's page counts as Runs, a project's as Projects)."""
    path = rx.State.router.page.path
    if href == urls.OVERVIEW:
        return (path == "/") | (path == "/index")
    return path.startswith(href)  # type: ignore[attr-defined]


def _inbox_badge() -> rx.Component:
    """How many questions and approvals wait for the viewer (pushed live)."""
    return rx.cond(
        InboxState.count > 0,
        rx.badge(
            InboxState.count,
            color_scheme="orange",
            variant="solid",
            radius="full",
            aria_label=InboxState.count.to_string() + " waiting for you",  # type: ignore[attr-defined]
            data_testid="inbox-badge",
        ),
    )


def _nav_link(label: str, href: str, icon: str) -> rx.Component:
    is_current = _is_current(href)
    return rx.link(
        rx.hstack(
            rx.icon(icon, size=18),
            rx.text(label, size="3", weight=rx.cond(is_current, "bold", "regular")),
            _inbox_badge() if href == urls.INBOX else rx.fragment(),
            spacing="2",
            align="center",
        ),
        href=href,
        underline="none",
        color_scheme=rx.cond(is_current, "indigo", "gray"),
        high_contrast=True,
        padding_x="0.75rem",
        padding_y="0.5rem",
        border_radius="var(--radius-2)",
        background=rx.cond(is_current, "var(--accent-a4)", "transparent"),
        _hover={"background": "var(--gray-a3)"},
        width="100%",
        aria_current=rx.cond(is_current, "page", "false"),
        data_testid=f"nav-{label.lower()}",
    )


def _brand() -> rx.Component:
    return rx.hstack(
        rx.icon("boxes", size=22),
        rx.text("codexk8s", size="5", weight="bold"),
        align="center",
        spacing="2",
    )


def sidebar() -> rx.Component:
    """The navigation: a sidebar from tablet width up, a menu button on phones."""
    return rx.fragment(
        rx.vstack(
            rx.box(_brand(), padding_x="0.75rem", padding_bottom="1rem"),
            *(_nav_link(*item) for item in NAV_ITEMS),
            refresh_trigger(InboxLive, InboxState.refresh),
            spacing="1",
            padding="1rem",
            width="14rem",
            min_width="14rem",
            border_right="1px solid var(--gray-a5)",
            display=rx.breakpoints(initial="none", md="flex"),
            role="navigation",
            aria_label="Main",
        ),
        rx.hstack(
            _brand(),
            rx.spacer(),
            rx.menu.root(
                rx.menu.trigger(
                    rx.icon_button(
                        rx.icon("menu", size=20),
                        variant="ghost",
                        aria_label="Open navigation",
                        data_testid="nav-menu",
                    )
                ),
                rx.menu.content(
                    *(
                        rx.menu.item(
                            rx.hstack(rx.icon(icon, size=16), label, spacing="2", align="center"),
                            on_select=rx.redirect(href),
                            data_testid=f"nav-menu-{label.lower()}",
                        )
                        for label, href, icon in NAV_ITEMS
                    ),
                ),
            ),
            align="center",
            padding="0.75rem 1rem",
            border_bottom="1px solid var(--gray-a5)",
            width="100%",
            display=rx.breakpoints(initial="flex", md="none"),
            role="navigation",
            aria_label="Main menu",
        ),
    )


def sign_in_button(test_id: str = "sign-in") -> rx.Component:
    # A full page load, not a client-side route change: sign-in is a chain of HTTP
    # redirects served outside the single-page app.
    return icon_label_button(
        "log-in",
        "Sign in",
        rx.call_script(f"window.location.assign({urls.AUTH_GITHUB_LOGIN!r})"),
        test_id,
    )


# Signing out is an HTTP route too: it revokes the session and clears the HttpOnly cookie, and
# the full page load gives the next page a fresh connection without that cookie. It takes a POST
# from our own origin only (a form submission carries the Origin header), so another site cannot
# sign people out with a link.
_SIGN_OUT_SCRIPT = (
    "const form = document.createElement('form'); form.method = 'post'; "
    f"form.action = {urls.AUTH_LOGOUT!r}; document.body.appendChild(form); form.submit();"
)


def _signed_in() -> rx.Component:
    return rx.hstack(
        rx.text(AuthState.email, size="2", color_scheme="gray", data_testid="signed-in-as"),
        icon_label_button(
            "log-out", "Sign out", rx.call_script(_SIGN_OUT_SCRIPT), "sign-out", color_scheme="gray"
        ),
        align="center",
        spacing="3",
        flex_wrap="wrap",
        min_width="0",
    )


def top_bar(title: str | rx.Var) -> rx.Component:
    return rx.flex(
        rx.heading(title, size="6", as_="h1"),
        rx.spacer(),
        # next-themes keeps the choice in localStorage, so it survives reloads and new tabs.
        rx.color_mode.button(
            variant="ghost", aria_label="Toggle dark and light theme", data_testid="theme-toggle"
        ),
        rx.cond(AuthState.is_signed_in, _signed_in(), sign_in_button()),
        align="center",
        # At phone width a long email and the sign-out button go to a second line instead of
        # widening the page.
        spacing="3",
        wrap="wrap",
        width="100%",
        padding_bottom="1rem",
        # At phone width a long email and the buttons wrap instead of widening the page.
        flex_wrap="wrap",
    )


# A run page sets a status favicon (web/state/run.py); every other page puts the app's back.
_RESET_FAVICON = (
    "(() => { const l = document.querySelector(\"link[rel~='icon']\");"
    " if (l && l.dataset.status) { l.href = '/favicon.ico'; delete l.dataset.status; } })()"
)


def page(title: str | rx.Var, *children: rx.Component, is_run_page: bool = False) -> rx.Component:
    """Wrap a page's content in the shared frame (TITLE may name what the page shows; a run's
    page keeps the status favicon it sets)."""
    return rx.flex(
        rx.el.style(STATUS_CSS),
        rx.fragment() if is_run_page else rx.box(on_mount=rx.call_script(_RESET_FAVICON)),
        sidebar(),
        rx.box(
            top_bar(title),
            *children,
            padding=rx.breakpoints(initial="1rem", md="1.5rem"),
            flex="1",
            min_width="0",
        ),
        direction=rx.breakpoints(initial="column", md="row"),
        min_height="100vh",
    )


def loading_spinner() -> rx.Component:
    """What a page shows while it does not know yet who is looking."""
    return rx.center(rx.spinner(size="3"), padding_y="4rem")


def skeletons(
    heights: list[str],
    *,
    test_id: str,
    skeleton: dict[str, Any] | None = None,
    **stack_props: Any,
) -> rx.Component:
    """A page's placeholder while it loads: full-width skeleton blocks of HEIGHTS in a column
    (SKELETON: the blocks' own props, STACK_PROPS: the column's)."""
    return rx.vstack(
        *(rx.skeleton(rx.box(height=h, width="100%"), **(skeleton or {})) for h in heights),
        width="100%",
        data_testid=test_id,
        **stack_props,
    )


def signed_in_only(
    content: rx.Component,
    signed_out: rx.Component,
    *,
    loading: rx.Component | None = None,
    is_loaded: rx.Var | None = None,
) -> rx.Component:
    """CONTENT for a signed-in person, SIGNED_OUT for anyone else; LOADING (a spinner unless
    given) until the sign-in is known and, when given, IS_LOADED (the page's own data) holds."""
    is_ready = AuthState.is_resolved if is_loaded is None else is_loaded & AuthState.is_resolved
    return rx.cond(
        is_ready,
        rx.cond(AuthState.is_signed_in, content, signed_out),
        loading if loading is not None else loading_spinner(),
    )


def section_card(
    title: str | rx.Var | rx.Component, *children: rx.Component, test_id: str | None = None
) -> rx.Component:
    """A card of the page's width: TITLE as its heading (h2), CHILDREN below."""
    heading = title if isinstance(title, rx.Component) else rx.heading(title, size="4", as_="h2")
    card_props = {} if test_id is None else {"data_testid": test_id}
    return rx.card(
        rx.vstack(heading, *children, spacing="3", width="100%"),
        width="100%",
        **card_props,
    )


def empty_state(
    icon: str, headline: str, hint: str, *, command: str | None = None, test_id: str | None = None
) -> rx.Component:
    """What a page shows when there is nothing yet, and what to do next (in a box with TEST_ID
    when given)."""
    if test_id is not None:
        return rx.box(empty_state(icon, headline, hint, command=command), data_testid=test_id)
    return rx.center(
        rx.vstack(
            rx.icon(icon, size=40, color="var(--gray-9)"),
            rx.heading(headline, size="4", as_="h2"),
            rx.text(hint, color_scheme="gray", text_align="center", max_width="32rem"),
            rx.cond(command is not None, rx.code(command or "", size="3")),
            align="center",
            spacing="3",
        ),
        padding_y="4rem",
        border="1px dashed var(--gray-a6)",
        border_radius="var(--radius-4)",
        data_testid="empty-state",
    )
