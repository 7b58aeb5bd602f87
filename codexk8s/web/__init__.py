"""The Reflex dashboard and the HTTP routes mounted beside it."""
