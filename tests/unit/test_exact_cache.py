from pipeline.exact_cache import CachedAnswer, ExactCache


def entry(at: float, answer: str = "a") -> CachedAnswer:
    return CachedAnswer(answer, "m", "q1", at)


def test_hit_until_ttl_then_miss() -> None:
    cache = ExactCache(ttl_s=10)
    cache.put("f", entry(100.0))
    assert cache.get("f", 109.0) is not None
    assert cache.get("f", 111.0) is None
    assert len(cache) == 0  # expired entries are dropped on read


def test_evicts_least_recently_used_beyond_bound() -> None:
    cache = ExactCache(ttl_s=100, max_entries=2)
    cache.put("a", entry(0))
    cache.put("b", entry(0))
    assert cache.get("a", 1) is not None  # a is now most recent
    cache.put("c", entry(0))
    assert cache.get("b", 1) is None
    assert cache.get("a", 1) is not None and cache.get("c", 1) is not None
