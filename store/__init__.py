"""DuckDB store: schema, migrations, typed read/write functions. Never imports torch."""
from store.db import connect, session, transaction
from store.errors import InputError
from store.workspace import Workspace

__all__ = ["connect", "session", "transaction", "InputError", "Workspace"]
