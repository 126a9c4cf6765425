"""Top-k cosine search over unit vectors in numpy: exact while small, coarse IVF once large.

Vectors are float32 (1M x 128 dims = 512 MB): float16 halves that, but numpy's float16 -> float32
widening per probed list cost more than the search itself (measured: p50 0.4 -> 1.3 ms at 100k).
Below `ivf_from` entries one matmul over everything (one GEMM for a micro-batch) is exact and
fast; past it the index trains k-means centroids once (`nlist` lists, sqrt of the expected size)
and a query scans only the `nprobe` nearest lists, so a
lookup at 1M entries reads ~1% of them. Keys are ints chosen by the caller; removal swaps the
last row into the hole, so memory never fragments.
"""

from __future__ import annotations

import numpy as np


def limit_blas_threads(n: int = 1) -> bool:
    """Pin numpy's BLAS to n threads: its small GEMMs here ran 10x slower with OpenBLAS threads
    fighting other processes on two cores (0.5 -> 5 ms a lookup). Call once at router start.
    Returns False when threadpoolctl is absent (then set OPENBLAS_NUM_THREADS before numpy loads)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(n, user_api="blas")
    return True


class _List:
    __slots__ = ("keys", "n", "vecs")

    def __init__(self, dim: int, capacity: int = 64) -> None:
        self.vecs = np.zeros((capacity, dim), np.float32)
        self.keys = np.zeros(capacity, np.int64)
        self.n = 0

    def add(self, key: int, vec: np.ndarray) -> int:
        if self.n == len(self.keys):
            self.vecs = np.concatenate([self.vecs, np.zeros_like(self.vecs)])
            self.keys = np.concatenate([self.keys, np.zeros_like(self.keys)])
        self.vecs[self.n], self.keys[self.n] = vec, key
        self.n += 1
        return self.n - 1

    def remove(self, pos: int) -> int | None:
        """Swap-remove row `pos`; returns the key that moved into it, if any."""
        self.n -= 1
        if pos == self.n:
            return None
        self.vecs[pos], self.keys[pos] = self.vecs[self.n], self.keys[self.n]
        return int(self.keys[pos])


class VectorIndex:
    def __init__(self, dim: int, *, ivf_from: int = 20_000, nprobe: int = 8, nlist: int | None = None,
                 seed: int = 0) -> None:
        self.dim = dim
        self.ivf_from = ivf_from
        self.nlist = nlist  # None: sqrt of the size at training; set it from the expected size
        self.nprobe = nprobe
        self._rng = np.random.default_rng(seed)
        self._centroids: np.ndarray | None = None
        self._lists = [_List(dim)]
        self._where: dict[int, tuple[int, int]] = {}  # key -> (list, row)

    def __len__(self) -> int:
        return len(self._where)

    def add(self, key: int, vec: np.ndarray) -> None:
        if key in self._where:
            self.remove(key)
        li = 0 if self._centroids is None else int(np.argmax(self._centroids @ vec))
        self._where[key] = (li, self._lists[li].add(key, vec))
        if self._centroids is None and len(self._where) >= self.ivf_from:
            self._train()

    def remove(self, key: int) -> None:
        li, pos = self._where.pop(key)
        moved = self._lists[li].remove(pos)
        if moved is not None:
            self._where[moved] = (li, pos)

    def search(self, vec: np.ndarray, k: int = 1) -> list[tuple[int, float]]:
        """The k nearest keys by cosine, best first (vec must be unit-norm)."""
        return self.search_batch(vec[None, :], k)[0]

    def search_batch(self, vecs: np.ndarray, k: int = 1) -> list[list[tuple[int, float]]]:
        if not self._where:
            return [[] for _ in vecs]
        if self._centroids is None:  # flat: one GEMM for the whole micro-batch
            flat = self._lists[0]
            scores = vecs @ flat.vecs[: flat.n].T
            return [self._top(flat.keys, row, k) for row in scores]
        sims = vecs @ self._centroids.T
        near = np.argpartition(-sims, self.nprobe - 1, axis=1)[:, : self.nprobe]
        found: list[list[tuple[int, float]]] = [[] for _ in vecs]
        for li in np.unique(near):  # one GEMM per probed list over the queries probing it: no copies
            lst = self._lists[li]
            if lst.n == 0:
                continue
            rows = np.nonzero((near == li).any(axis=1))[0]
            scores = lst.vecs[: lst.n] @ vecs[rows].T
            for j, row in enumerate(rows):
                found[row] += self._top(lst.keys, scores[:, j], k)
        return [sorted(f, key=lambda kv: -kv[1])[:k] for f in found]

    @staticmethod
    def _top(keys: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
        top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(keys[i]), float(scores[i])) for i in top]

    def _train(self, iterations: int = 8) -> None:
        """k-means on a sample of what is stored, then re-file every vector under its centroid."""
        flat = self._lists[0]
        vecs, keys = flat.vecs[: flat.n].copy(), flat.keys[: flat.n].copy()
        nlist = min(self.nlist or max(16, int(np.sqrt(len(keys)))), len(keys) // 8)
        sample = vecs[self._rng.choice(len(vecs), min(len(vecs), 64 * nlist), replace=False)]
        centroids = sample[self._rng.choice(len(sample), nlist, replace=False)].copy()
        for _ in range(iterations):  # spherical k-means: mean of members, renormalised
            assign = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, sample)
            filled = np.bincount(assign, minlength=nlist) > 0
            centroids[filled] = sums[filled]
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        self._centroids = centroids
        self._lists = [_List(self.dim) for _ in range(nlist)]
        self._where.clear()
        for start in range(0, len(keys), 65_536):  # assign in chunks: bounded temporary memory
            assign = np.argmax(vecs[start:start + 65_536] @ centroids.T, axis=1)
            for key, vec, li in zip(keys[start:start + 65_536], vecs[start:start + 65_536], assign,
                                    strict=True):
                self._where[int(key)] = (int(li), self._lists[li].add(int(key), vec))
