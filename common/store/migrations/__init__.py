"""Alembic migrations of the results database (run by common.store.migrate)."""
