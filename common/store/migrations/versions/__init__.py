"""Alembic revisions, one file each; never edit one that has been applied."""
