"""KV-cache decode loop over the two cache conventions an ONNX causal LM can use.

PlainRunner: standard ops (Optimum / our llama_graph): LEFT padding, explicit
position_ids, the graph concatenates past + new into present every step.
FusedRunner: GroupQueryAttention graphs (our fused_graph, onnxruntime-genai): RIGHT
padding, per-row lengths via attention_mask, and past/present bound to one
preallocated buffer per layer so a step appends in place instead of copying the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class KvLayout:
    past_names: list[str]
    present_names: list[str]
    kv_heads: int
    head_dim: int
    dtype: Any
    inputs: set[str]


class PlainRunner:
    def __init__(self, session: Any, layout: KvLayout, pad: int) -> None:
        self.session, self.layout, self.pad = session, layout, pad

    def prefill(self, encoded: list[list[int]], capacity: int) -> np.ndarray:
        n, width = len(encoded), max(len(ids) for ids in encoded)
        ids = np.full((n, width), self.pad, dtype=np.int64)
        self.mask = np.zeros((n, width), dtype=np.int64)
        for row, seq in enumerate(encoded):
            ids[row, width - len(seq) :] = seq  # left padding keeps the newest token last
            self.mask[row, width - len(seq) :] = 1
        self.positions = np.clip(np.cumsum(self.mask, axis=1) - 1, 0, None)
        lay = self.layout
        self.past = [np.zeros((n, lay.kv_heads, 0, lay.head_dim), lay.dtype) for _ in lay.past_names]
        return self._run(ids)

    def step(self, tokens: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        if keep is not None:  # drop finished rows so they cost nothing
            self.mask, self.positions = self.mask[keep], self.positions[keep]
            self.past = [p[keep] for p in self.past]
        self.mask = np.concatenate([self.mask, np.ones((len(tokens), 1), np.int64)], axis=1)
        self.positions = self.positions[:, -1:] + 1
        return self._run(tokens[:, None].astype(np.int64))

    def _run(self, ids: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {"input_ids": ids}
        names = self.layout.inputs
        if "attention_mask" in names:
            feeds["attention_mask"] = self.mask
        if "position_ids" in names:
            feeds["position_ids"] = self.positions
        if "use_cache_branch" in names:  # Optimum "merged" decoders
            feeds["use_cache_branch"] = np.array([self.past[0].shape[2] > 0])
        feeds.update(zip(self.layout.past_names, self.past, strict=True))
        logits, *self.past = self.session.run(["logits", *self.layout.present_names], feeds)
        return logits[:, -1, :]


class FusedRunner:
    def __init__(self, session: Any, layout: KvLayout, pad: int) -> None:
        self.session, self.layout, self.pad = session, layout, pad

    def prefill(self, encoded: list[list[int]], capacity: int) -> np.ndarray:
        n, width = len(encoded), max(len(ids) for ids in encoded)
        ids = np.full((n, width), self.pad, dtype=np.int64)
        for row, seq in enumerate(encoded):
            ids[row, : len(seq)] = seq  # right padding: GQA reads rows from position 0
        self.lengths = np.array([len(seq) for seq in encoded], dtype=np.int64)
        lay = self.layout
        shape = (n, lay.kv_heads, max(capacity, width), lay.head_dim)
        self._bind([np.zeros(shape, lay.dtype) for _ in lay.past_names])
        logits = self._run(ids)
        if logits.shape[1] == 1:  # our graph already picked each row's last valid position
            return logits[:, 0, :]
        return logits[np.arange(n), self.lengths - 1, :]

    def step(self, tokens: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        if keep is not None:  # compact the buffers: one copy when rows finish, none per step
            self.lengths = self.lengths[keep]
            self._bind([np.ascontiguousarray(b[keep]) for b in self.buffers])
        self.lengths = self.lengths + 1
        return self._run(tokens[:, None].astype(np.int64))[:, -1, :]

    def _bind(self, buffers: list[np.ndarray]) -> None:
        import onnxruntime as ort

        self.buffers = buffers  # keeps the memory behind the OrtValues alive
        self.io = self.session.io_binding()
        self.io.bind_output("logits")
        names = zip(self.layout.past_names, self.layout.present_names, strict=True)
        for (past, present), buf in zip(names, buffers, strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(buf)  # wraps, no copy
            self.io.bind_ortvalue_input(past, value)
            self.io.bind_ortvalue_output(present, value)  # same memory: GQA appends in place

    def _run(self, ids: np.ndarray) -> np.ndarray:
        total = int(self.lengths.max())
        mask = (np.arange(total)[None, :] < self.lengths[:, None]).astype(np.int64)
        self.io.bind_cpu_input("input_ids", ids)
        self.io.bind_cpu_input("attention_mask", mask)
        self.session.run_with_iobinding(self.io)
        return self.io.get_outputs()[0].numpy()


@dataclass
class Decoded:
    tokens: list[list[int]]
    logprobs: list[list[float]]  # model log-prob (temperature 1) of each chosen token
    reasons: list[str]
    argmax: list[list[int]] = field(default_factory=list)  # greedy pick at each step
    prefill_s: float = 0.0
    step_s: list[float] = field(default_factory=list)  # graph step + token choice, per token


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    """Per-row log-normaliser in float32: three passes over [batch, vocab], cheap at batch 32."""
    top = logits.max(axis=-1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))


def decode(
    runner: PlainRunner | FusedRunner,
    encoded: list[list[int]],
    limits: list[int],
    choose: Callable[[int, np.ndarray], int] | None,
    *,
    eos: set[int],
    forced: list[list[int]] | None = None,
    stop_hit: Callable[[int, list[int]], bool] | None = None,
    ignore_eos: bool = False,
) -> Decoded:
    """Run prefill then one step per token. `choose(row, logits)` picks a token (None:
    greedy, the argmax); `forced`
    feeds fixed continuations instead (teacher forcing); both ignore_eos and forcing run
    every row to its limit, which is what a benchmark wants."""
    n = len(encoded)
    out = Decoded([[] for _ in encoded], [[] for _ in encoded], ["length"] * n, [[] for _ in encoded])
    started = time.perf_counter()
    logits = runner.prefill(encoded, max(len(e) + lim for e, lim in zip(encoded, limits, strict=True)))
    out.prefill_s = time.perf_counter() - started
    active = np.arange(n)  # original row index of each row still in the batch
    prefilled = True  # the first token comes from the prefill, timed above
    while True:
        logits = logits.astype(np.float32, copy=False)
        lse, best = _logsumexp(logits), logits.argmax(axis=-1)
        picks = np.empty(len(active), dtype=np.int64)
        keep = []
        for row, orig in enumerate(active):
            step = len(out.tokens[orig])
            if forced is not None:
                token = forced[orig][step]
            else:
                token = int(best[row]) if choose is None else choose(orig, logits[row])
            picks[row] = token
            out.tokens[orig].append(token)
            out.logprobs[orig].append(float(logits[row, token] - lse[row]))
            out.argmax[orig].append(int(best[row]))
            ended = not ignore_eos and forced is None and token in eos
            if ended or (stop_hit is not None and stop_hit(orig, out.tokens[orig])):
                out.reasons[orig] = "stop"
            elif step + 1 < limits[orig]:
                keep.append(row)
        if not prefilled:  # a step = graph run + token choice
            out.step_s.append(time.perf_counter() - started)
        prefilled = False
        if not keep:
            return out
        subset = None if len(keep) == len(active) else np.array(keep)
        if subset is not None:
            active, picks = active[subset], picks[subset]
        started = time.perf_counter()
        logits = runner.step(picks, subset)
