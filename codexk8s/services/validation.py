"""Turning user input into domain values, with one error wording for every choice list."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from codexk8s.errors import InvalidArgumentError

E = TypeVar("E", bound=StrEnum)


def parse_choice(choices: type[E], value: str, what: str) -> E:
    """`choices(value)`, or an InvalidArgumentError that lists the allowed values."""
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(choice.value for choice in choices)
        raise InvalidArgumentError(f"unknown {what} {value!r}; use one of: {allowed}") from None
