"""Reflex pages, one module per page."""
