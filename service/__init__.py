"""FastAPI app, storage (SQLModel), workers and CLI: the only package that knows HTTP and databases."""
