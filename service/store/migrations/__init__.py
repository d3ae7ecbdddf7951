"""Alembic migrations of the labelagent schema (``labelagent db upgrade``); see ``service.store.migrate``."""
