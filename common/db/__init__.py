"""Relational storage: models (:mod:`.models`), engines and sessions (:mod:`.session`), data access
(:mod:`.repositories`) and schema migrations (:mod:`.migrate`, Alembic scripts under ``migrations/``)."""
