"""One-shot streaming URLs: used once, expire, bounded in number."""

from __future__ import annotations

import pytest

from pallet.cri.errors import ResourceExhausted
from pallet.cri.streaming.tokens import RequestCache


def test_token_is_consumed_once() -> None:
    cache: RequestCache[str] = RequestCache()
    token = cache.insert("exec ls")
    assert len(token) >= 20
    assert cache.consume(token) == "exec ls"
    assert cache.consume(token) is None
    assert cache.consume("made-up") is None


def test_tokens_expire() -> None:
    now = [0.0]
    cache: RequestCache[str] = RequestCache(ttl=60, clock=lambda: now[0])
    token = cache.insert("x")
    now[0] = 61
    assert cache.consume(token) is None
    assert len(cache) == 0


def test_in_flight_is_bounded_and_frees_on_expiry() -> None:
    now = [0.0]
    cache: RequestCache[int] = RequestCache(ttl=10, max_in_flight=3, clock=lambda: now[0])
    for i in range(3):
        cache.insert(i)
    with pytest.raises(ResourceExhausted):
        cache.insert(4)
    now[0] = 11
    cache.insert(5)
    assert len(cache) == 1
