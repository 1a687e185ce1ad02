"""A small per-process cache with expiry, for lookups on the webhook acknowledgement path.

Webhooks name a provider account and a brand on every request; both change rarely (an operator edits a
channel route, a brand is created) and cost a Postgres round trip each. Caching them for a few seconds
takes those trips off the acknowledgement, at the price that an edit reaches each gateway replica
within ``ttl_s``. Misses are cached too, so a flood for an unknown account does not reach the database.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Entries expire ``ttl_s`` after they were loaded; the oldest go first beyond ``max_entries``.

    ``ttl_s <= 0`` disables caching (every call loads). Not shared between processes or replicas.
    """

    def __init__(
        self, ttl_s: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value for ``key``, or ``await load()`` stored for next time (``None`` included)."""
        if self._ttl_s <= 0:
            return await load()
        now = self._clock()
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            return found[1]
        value = await load()
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return value

    def invalidate(self, key: K) -> None:
        """Forget ``key`` (this process only)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything (this process only)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
