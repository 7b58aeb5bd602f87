"""Run a Reflex event handler in a test the way Reflex does: inside the context that holds the
shared states a handler links (`codexk8s.web.live.watch`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from reflex.istate.manager.memory import StateManagerMemory
from reflex.istate.shared import SharedStateBaseInternal
from reflex.state import BaseState
from reflex_base.event.context import EventContext
from reflex_base.registry import RegistrationContext

from codexk8s.config import get_settings
from codexk8s.web.origins import allowed_origins
from tests.conftest import run_async

S = TypeVar("S", bound=BaseState)


def call_handler(state: BaseState, handler: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """HANDLER(state, *args) with linked shared states available; returns what it returns."""
    registration = RegistrationContext.get()

    async def run() -> Any:
        # run_async's worker thread does not inherit the context the states were registered in.
        RegistrationContext.set(registration)
        context = EventContext(
            token="test-client", state_manager=StateManagerMemory(), enqueue_impl=_no_enqueue
        )
        with context:
            shared = await state.get_state(SharedStateBaseInternal)
            async with shared._modify_linked_states():
                return await handler(state, *args)

    return run_async(run())


async def _no_enqueue(*_: Any, **__: Any) -> None:
    raise AssertionError("these handlers enqueue no events")


def dashboard_headers(cookie: str) -> dict[str, str]:
    """The Socket.IO handshake headers of a dashboard tab holding COOKIE: our own pages send
    PUBLIC_URL's origin (handlers resolve nobody without it)."""
    return {"cookie": cookie, "origin": allowed_origins(get_settings())[0]}


def dashboard_state(state_cls: type[S], cookie: str, pathname: str) -> S:
    """STATE_CLS as the handlers of a dashboard tab at PATHNAME holding COOKIE see it."""
    from reflex.istate.data import RouterData
    from reflex.state import State

    root = State(_reflex_internal_init=True)
    root.router_data = {"headers": dashboard_headers(cookie), "pathname": pathname}
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> S:
        return await root.get_state(state_cls)

    return run_async(get())
