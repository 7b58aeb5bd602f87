"""Event handlers that only store what a control sends: one definition for every such field."""

from collections.abc import Callable
from typing import Any


def field_setter(field: str) -> Callable[[Any, str], None]:
    """The `set_<field>` event handler of a state class: stores the value as it came. Assign it
    in the class body (`set_name = field_setter("name")`); Reflex picks it up like a method."""

    def setter(self: Any, value: str) -> None:
        setattr(self, field, value)

    # Reflex names the event after the function, so it must be the attribute's name.
    setter.__name__ = setter.__qualname__ = f"set_{field}"
    return setter
