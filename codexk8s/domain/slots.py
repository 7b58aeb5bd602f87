"""Slot policy: how many runs a project executes at once and how long a lease lasts."""

from __future__ import annotations

from enum import StrEnum

DEFAULT_SLOTS = 2
MAX_SLOTS = 64
# A leased slot must be renewed within this time or it is reclaimed. Renewal happens every
# LEASE_RENEW_SECONDS while the run's workload lives, so a lease only runs out when the
# replica that claimed a run died before launching it, or the control loop stopped altogether.
LEASE_TTL_SECONDS = 120
LEASE_RENEW_SECONDS = 30


class SlotState(StrEnum):
    FREE = "free"
    LEASED = "leased"
