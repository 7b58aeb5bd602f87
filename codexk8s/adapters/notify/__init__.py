"""Notification transports between replicas (Redis pub/sub, PostgreSQL LISTEN/NOTIFY)."""
