import numpy as np

from pipeline.semantic.index import VectorIndex


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_search_matches_brute_force_and_removal_keeps_keys_right() -> None:
    rng = np.random.default_rng(0)
    vecs = unit(rng, 300, 32)
    index = VectorIndex(32)
    for key, vec in enumerate(vecs):
        index.add(key * 7, vec)
    queries = unit(rng, 20, 32)
    for q in queries:
        want = int(np.argmax(vecs @ q)) * 7
        assert index.search(q, 1)[0][0] == want
    for key in range(0, 300, 2):  # remove every other: swap-remove must keep the rest findable
        index.remove(key * 7)
    assert len(index) == 150
    for key in range(1, 300, 2):
        got, score = index.search(vecs[key], 1)[0]
        assert got == key * 7 and score > 0.99


def test_ivf_finds_near_duplicates_and_supports_updates() -> None:
    rng = np.random.default_rng(1)
    centres = unit(rng, 40, 32)
    vecs = centres[rng.integers(0, 40, 4000)] + 0.3 * unit(rng, 4000, 32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(32, ivf_from=2000, nprobe=4)
    for key, vec in enumerate(vecs):
        index.add(key, vec)
    assert index._centroids is not None  # switched to IVF at 2,000 entries
    noisy = vecs[:200] + 0.02 * unit(rng, 200, 32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    found = sum(index.search(q, 1)[0][0] == i for i, q in enumerate(noisy))
    assert found >= 196  # near duplicates: IVF recall ~100%
    index.add(5, -vecs[5])  # re-adding a key moves it
    assert len(index) == 4000 and index.search(-vecs[5], 1)[0][0] == 5
    assert index.search(vecs[0], 3)[0][1] >= index.search(vecs[0], 3)[-1][1]


def test_empty_index() -> None:
    assert VectorIndex(8).search(np.ones(8, np.float32) / 8**0.5) == []
