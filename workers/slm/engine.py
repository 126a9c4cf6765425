"""Greedy KV-cache decoding of an ONNX causal LM on onnxruntime (CPU).

Reads a model directory holding model.onnx (Optimum / onnxruntime-genai input
layout), tokenizer.json and the HF json side files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topics.errors import ConfigError, PermanentError

_PAST_RE = re.compile(r"past_key_values\.(\d+)\.(key|value)")
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float  # exp(mean log-prob of generated tokens), in [0, 1]
    finish_reason: str  # "stop" or "length"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _token_text(value: Any) -> str | None:
    """tokenizer_config tokens are strings or AddedToken dicts."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class SlmEngine:
    def __init__(self, model_dir: str | Path, *, threads: int = 2) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        model_path = self.model_dir / "model.onnx"
        tok_path = self.model_dir / "tokenizer.json"
        if not self.model_dir.is_dir():
            raise ConfigError(f"SLM model directory {self.model_dir} does not exist")
        for required in (model_path, tok_path):
            if not required.is_file():
                raise ConfigError(f"SLM model file {required} is missing")

        config = _read_json(self.model_dir / "config.json")
        gen_config = _read_json(self.model_dir / "generation_config.json")
        tok_config = _read_json(self.model_dir / "tokenizer_config.json")
        self.model_name: str = str(config.get("pointsman_model_name") or self.model_dir.name)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(f"onnxruntime cannot load {model_path}: {exc}") from exc

        inputs = {i.name: i for i in self._session.get_inputs()}
        self._input_names = set(inputs)
        past = sorted((int(m.group(1)), m.group(2)) for n in inputs if (m := _PAST_RE.fullmatch(n)))
        if not past or "input_ids" not in inputs:
            raise ConfigError(
                f"{model_path} has no past_key_values.* inputs: export it with a KV cache "
                "(e.g. optimum-cli export onnx --task text-generation-with-past)"
            )
        self._past_names = [f"past_key_values.{i}.{kind}" for i, kind in past]
        self._present_names = [f"present.{i}.{kind}" for i, kind in past]
        first = inputs[self._past_names[0]]
        self._kv_heads = (
            int(first.shape[1])
            if isinstance(first.shape[1], int)
            else int(config.get("num_key_value_heads", config.get("num_attention_heads", 0)))
        )
        self._head_dim = (
            int(first.shape[3])
            if isinstance(first.shape[3], int)
            else int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
        )
        self._kv_dtype = _ORT_FLOAT.get(first.type, np.float32)

        logits_shape = self._session.get_outputs()[0].shape
        vocab = logits_shape[-1] if isinstance(logits_shape[-1], int) else config.get("vocab_size")
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        tok_vocab = self._tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab is not None and tok_vocab > int(vocab):
            raise ConfigError(
                f"tokenizer in {self.model_dir} has {tok_vocab} tokens but the model only {vocab} logits"
            )

        self._eos = set(_ids(gen_config.get("eos_token_id")) or _ids(config.get("eos_token_id")))
        eos_token = _token_text(tok_config.get("eos_token"))
        if eos_token and (eos_id := self._tokenizer.token_to_id(eos_token)) is not None:
            self._eos.add(eos_id)
        pad = _ids(gen_config.get("pad_token_id")) or _ids(config.get("pad_token_id"))
        self._pad = pad[0] if pad else (min(self._eos) if self._eos else 0)
        self._max_positions = int(config.get("max_position_embeddings") or 1 << 30)
        self._bos_text = _token_text(tok_config.get("bos_token")) or ""
        template = tok_config.get("chat_template")
        if isinstance(template, list):  # HF allows a list of named templates
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        self._template = _compile_template(template) if template else None

    def _render(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self._template is None:
            return "\n".join(str(m.get("content", "")) for m in messages)
        from jinja2.exceptions import TemplateError

        try:
            return str(
                self._template.render(
                    messages=[dict(m) for m in messages],
                    add_generation_prompt=True,
                    bos_token=self._bos_text,
                    eos_token="",
                )
            )
        except TemplateError as exc:  # e.g. the template rejects a role order
            raise PermanentError(f"chat template refused the prompt: {exc}") from exc

    def generate(
        self, prompts: Sequence[Sequence[Mapping[str, str]]], *, max_tokens: int
    ) -> list[Generation]:
        """Greedy-decode each chat prompt; all prompts go through one left-padded batch."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if not prompts:
            return []
        encoded = [self._tokenizer.encode(self._render(p), add_special_tokens=False).ids for p in prompts]
        for ids in encoded:
            if not ids:
                raise PermanentError("prompt renders to zero tokens")
            if len(ids) >= self._max_positions:
                raise PermanentError(
                    f"prompt has {len(ids)} tokens, the model's context is {self._max_positions}"
                )
        limits = [min(max_tokens, self._max_positions - len(ids)) for ids in encoded]
        tokens, logprobs, reasons = self._decode(encoded, limits)
        results = []
        for ids, toks, lps, reason in zip(encoded, tokens, logprobs, reasons, strict=True):
            text_ids = [t for t in toks if t not in self._eos]
            confidence = float(np.exp(np.mean(lps))) if lps else 0.0
            results.append(
                Generation(
                    # a cut at max_tokens can split a UTF-8 sequence: drop the dangling replacement char
                    text=self._tokenizer.decode(text_ids, skip_special_tokens=True).rstrip("\ufffd"),
                    prompt_tokens=len(ids),
                    completion_tokens=len(text_ids),
                    confidence=min(1.0, max(0.0, confidence)),
                    finish_reason=reason,
                )
            )
        return results

    def _decode(
        self, encoded: list[list[int]], limits: list[int]
    ) -> tuple[list[list[int]], list[list[float]], list[str]]:
        n = len(encoded)
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((n, width), self._pad, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = ids  # left padding keeps the newest token last
            mask[row, width - len(ids) :] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        past = [np.zeros((n, self._kv_heads, 0, self._head_dim), self._kv_dtype) for _ in self._past_names]

        tokens: list[list[int]] = [[] for _ in encoded]
        logprobs: list[list[float]] = [[] for _ in encoded]
        reasons = ["length"] * n
        active = np.arange(n)  # original row index of each row still in the batch
        while True:
            feeds: dict[str, np.ndarray] = {"input_ids": input_ids}
            if "attention_mask" in self._input_names:
                feeds["attention_mask"] = mask
            if "position_ids" in self._input_names:
                feeds["position_ids"] = positions
            if "use_cache_branch" in self._input_names:  # Optimum "merged" decoders
                feeds["use_cache_branch"] = np.array([past[0].shape[2] > 0])
            feeds.update(zip(self._past_names, past, strict=True))
            logits, *present = self._session.run(["logits", *self._present_names], feeds)
            last = logits[:, -1, :].astype(np.float64)
            shifted = last - last.max(axis=-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            chosen = logp.argmax(axis=-1)

            keep = []
            for row, orig in enumerate(active):
                token = int(chosen[row])
                tokens[orig].append(token)
                logprobs[orig].append(float(logp[row, token]))
                if token in self._eos:
                    reasons[orig] = "stop"
                elif len(tokens[orig]) < limits[orig]:
                    keep.append(row)
            if not keep:
                return tokens, logprobs, reasons
            if len(keep) < len(active):  # drop finished rows so they cost nothing
                idx = np.array(keep)
                active, chosen, mask = active[idx], chosen[idx], mask[idx]
                positions, present = positions[idx], [p[idx] for p in present]
            input_ids = chosen[:, None].astype(np.int64)
            mask = np.concatenate([mask, np.ones((len(active), 1), np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            past = present


def _compile_template(source: str) -> Any:
    """Compile a HF chat template the way transformers does (sandboxed jinja2)."""
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise ConfigError(
            "the model has a chat template; rendering it needs jinja2: pip install jinja2"
        ) from exc

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ConfigError(f"bad chat template: {exc}") from exc
