"""Scheduled jobs: plain async functions that call services."""
