"""Platform and project roles (DESIGN §9)."""

from __future__ import annotations

from enum import StrEnum


class PlatformRole(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    USER = "user"


class ProjectRole(StrEnum):
    READ = "read"
    READ_WRITE = "read_write"
    ADMIN = "admin"
