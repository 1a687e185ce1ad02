"""What every repository module shares."""

#: Upserts return ORM objects; refresh any copy already in the identity map with the stored values.
POPULATE_EXISTING = {"populate_existing": True}
