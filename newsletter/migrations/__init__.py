"""Alembic migrations of the store, applied in order by `newsletter.store.open_store`."""
