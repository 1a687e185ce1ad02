"""The gateway intake's lookup cache: expiry, cached misses, size bound, and ttl 0 = no cache."""

from __future__ import annotations

import pytest

from common.ttl_cache import TTLCache


class Loads:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def loader(self, key: str, value: str | None):
        async def load() -> str | None:
            self.calls.append(key)
            return value

        return load


@pytest.fixture
def clock() -> list[float]:
    return [100.0]


async def test_a_value_is_loaded_once_until_it_expires(clock: list[float]) -> None:
    cache: TTLCache[str, str | None] = TTLCache(10.0, clock=lambda: clock[0])
    loads = Loads()
    assert await cache.get_or_load("a", loads.loader("a", "A")) == "A"
    clock[0] += 9.9
    assert await cache.get_or_load("a", loads.loader("a", "changed")) == "A"
    clock[0] += 0.2
    assert await cache.get_or_load("a", loads.loader("a", "changed")) == "changed"
    assert loads.calls == ["a", "a"]


async def test_misses_are_cached_too_and_invalidate_forgets(clock: list[float]) -> None:
    cache: TTLCache[str, str | None] = TTLCache(10.0, clock=lambda: clock[0])
    loads = Loads()
    assert await cache.get_or_load("unknown", loads.loader("unknown", None)) is None
    assert await cache.get_or_load("unknown", loads.loader("unknown", "late")) is None
    cache.invalidate("unknown")
    assert await cache.get_or_load("unknown", loads.loader("unknown", "late")) == "late"
    assert loads.calls == ["unknown", "unknown"]


async def test_the_oldest_entries_go_beyond_max_entries(clock: list[float]) -> None:
    cache: TTLCache[str, str | None] = TTLCache(10.0, max_entries=2, clock=lambda: clock[0])
    loads = Loads()
    for key in ("a", "b", "c"):
        await cache.get_or_load(key, loads.loader(key, key.upper()))
    assert len(cache) == 2
    await cache.get_or_load("a", loads.loader("a", "A"))  # evicted: loaded again
    assert loads.calls == ["a", "b", "c", "a"]


async def test_ttl_zero_loads_every_time(clock: list[float]) -> None:
    cache: TTLCache[str, str | None] = TTLCache(0.0, clock=lambda: clock[0])
    loads = Loads()
    for _ in range(3):
        assert await cache.get_or_load("a", loads.loader("a", "A")) == "A"
    assert loads.calls == ["a", "a", "a"] and len(cache) == 0
