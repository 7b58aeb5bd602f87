"""Starlette routes: health, webhook, auth, staff API."""
