"""Start-up work of the server process."""

from __future__ import annotations

import gc

from codexk8s.web.lifespan import freeze_startup_objects


def test_startup_objects_are_frozen_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_objects()
        # Everything alive now (this module's imports included) is left out of collections.
        assert gc.get_freeze_count() > 10_000
        assert gc.get_count()[0] < 100  # and the young generation was just emptied
    finally:
        gc.unfreeze()
