from collections.abc import Sequence

import numpy as np

from pipeline.semantic.cache import SemanticCache, SemanticEntry, SemanticKey, SemanticSettings, key_for
from pipeline.semantic.embedders import HashingEmbedder
from topics.schemas import ChatMessage, Query


class CountingEmbedder(HashingEmbedder):
    """A stand-in verifier: hashing vectors, and a count of the texts it was asked to embed."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().embed(texts)


def entry(tenant: str, text: str, qid: str = "q1", at: float = 0.0, **kw: object) -> SemanticEntry:
    return SemanticEntry(SemanticKey(tenant, text, **kw), f"answer to {text}", "m", qid, at)  # type: ignore[arg-type]


def cache(**settings: object) -> SemanticCache:
    return SemanticCache(HashingEmbedder(), None, SemanticSettings(threshold=0.7, **settings))  # type: ignore[arg-type]


def test_hit_within_tenant_never_across() -> None:
    c = cache()
    c.put(entry("acme", "How do I reset my password?"), now=0.0)
    hit, other = c.lookup_batch([SemanticKey("acme", "how do i reset my password"),
                                 SemanticKey("globex", "How do I reset my password?")], now=1.0)
    assert hit.entry is not None and hit.similarity is not None and hit.similarity > 0.9
    assert "semantic static" in hit.reason and "q1" in hit.reason
    assert other.entry is None


def test_generation_parameters_and_context_must_match() -> None:
    c = cache()
    c.put(entry("t", "Summarise the meeting", max_tokens=64), now=0.0)
    assert c.lookup_batch([SemanticKey("t", "Summarise the meeting", max_tokens=512)], 1.0)[0].entry is None
    found = c.lookup_batch([SemanticKey("t", "Summarise the meeting", max_tokens=64)], 1.0)[0]
    assert found.entry is not None
    c.put(entry("t", "And in French?", context=("user:tell me a joke",)), now=0.0)
    miss = c.lookup_batch([SemanticKey("t", "And in French?", context=("user:explain tcp",))], 1.0)[0]
    assert miss.entry is None and "context" in miss.reason


def test_guards_block_near_identical_traps() -> None:
    c = cache()
    c.put(entry("t", "Is ibuprofen safe to take with alcohol?"), now=0.0)
    c.put(entry("t", "Is a 2-bedroom flat available in March?", "q2"), now=0.0)
    neg, num = c.lookup_batch([SemanticKey("t", "Is ibuprofen not safe to take with alcohol?"),
                               SemanticKey("t", "Is a 3-bedroom flat available in March?")], 1.0)
    assert neg.entry is None and "negation" in neg.reason
    assert num.entry is None and "numbers" in num.reason


def test_ttl_and_bound_evict_oldest() -> None:
    c = cache(ttl_s=10.0, max_entries=2)
    c.put(entry("t", "first question about billing", "q1", at=0.0), now=0.0)
    c.put(entry("t", "second question about shipping", "q2", at=5.0), now=5.0)
    c.put(entry("t", "third question about returns", "q3", at=6.0), now=6.0)
    assert len(c) == 2
    assert c.lookup_batch([SemanticKey("t", "first question about billing")], 6.0)[0].entry is None
    assert c.lookup_batch([SemanticKey("t", "second question about shipping")], 14.0)[0].entry is not None
    assert c.lookup_batch([SemanticKey("t", "second question about shipping")], 16.0)[0].entry is None
    c.put(entry("t", "fourth question about returns", "q4", at=30.0), now=30.0)
    assert len(c) == 1  # the stale third entry went on the next put


def test_same_key_replaces_entry() -> None:
    c = cache()
    c.put(entry("t", "What are your opening hours?", "old"), now=0.0)
    c.put(entry("t", "What are your opening hours?", "new"), now=1.0)
    assert len(c) == 1
    found = c.lookup_batch([SemanticKey("t", "What are your opening hours?")], 2.0)[0]
    assert found.entry is not None and found.entry.source_query_id == "new"


def test_verifier_runs_only_in_the_grey_band() -> None:
    verifier = CountingEmbedder()
    settings = SemanticSettings(threshold=0.5, fast_accept=0.99, fast_reject=0.3)
    c = SemanticCache(HashingEmbedder(), verifier, settings)
    c.put(entry("t", "How do I change my delivery address?"), now=0.0)
    same = c.lookup_batch([SemanticKey("t", "How do I change my delivery address?")], 1.0)[0]
    assert same.stage == "static" and verifier.texts == 0
    grey = c.lookup_batch([SemanticKey("t", "how can i change the delivery address on my order")], 1.0)[0]
    assert grey.stage == "verifier" and verifier.texts == 2  # the query and the candidate, once
    far = c.lookup_batch([SemanticKey("t", "zzz qqq xxx")], 1.0)[0]
    assert far.entry is None and verifier.texts == 2


def test_tenant_threshold_overrides_default() -> None:
    settings = SemanticSettings(threshold=0.5, tenant_thresholds={"strict": 0.999})
    c = SemanticCache(HashingEmbedder(), None, settings)
    for tenant in ("lax", "strict"):
        c.put(entry(tenant, "How do I change my delivery address?"), now=0.0)
    keys = [SemanticKey(t, "how can i change the delivery address for my order") for t in ("lax", "strict")]
    lax, strict = c.lookup_batch(keys, 1.0)
    assert lax.entry is not None and strict.entry is None


def test_key_for_query_uses_last_message_and_context() -> None:
    q = Query(tenant="acme", messages=[ChatMessage(role="user", content="Hi  There"),
                                       ChatMessage(role="user", content="What now?")], max_tokens=32)
    key = key_for(q)
    assert key.text == "What now?" and key.context == ("user:hi there",) and key.group == ("acme", 32, 0.0)


def test_precomputed_vectors_give_the_same_answer() -> None:
    c = cache()
    c.put(entry("t", "How do I reset my password?"), now=0.0)
    keys = [SemanticKey("t", "how do i reset my password"), SemanticKey("u", "anything")]
    assert c.lookup_batch(keys, 1.0, vectors=c.embed(keys)) == c.lookup_batch(keys, 1.0)


def test_strict_tenant_is_never_fast_accepted() -> None:
    verifier = CountingEmbedder()
    settings = SemanticSettings(fast_accept=0.9, fast_reject=0.3, tenant_thresholds={"strict": 0.999})
    c = SemanticCache(HashingEmbedder(), verifier, settings)
    c.put(entry("strict", "How do I change my delivery address?"), now=0.0)
    found = c.lookup_batch([SemanticKey("strict", "how do i change my delivery address")], 1.0)[0]
    assert found.stage == "verifier" and verifier.texts == 2


def test_typo_repeat_hits_without_the_verifier_unless_the_tenant_is_strict() -> None:
    verifier = CountingEmbedder()
    settings = SemanticSettings(threshold=0.95, fast_accept=0.97, tenant_thresholds={"strict": 0.999})
    c = SemanticCache(HashingEmbedder(), verifier, settings)
    for tenant in ("lax", "strict"):
        c.put(entry(tenant, "How do I change the email address on my account?"), now=0.0)
    keys = [SemanticKey(t, "How do I chnage the email adress on my acount?") for t in ("lax", "strict")]
    lax, strict = c.lookup_batch(keys, 1.0)
    assert lax.entry is not None and lax.stage == "static" and "spelling" in lax.reason
    assert strict.stage == "verifier"
