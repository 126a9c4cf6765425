"""KV-cache decoding of an ONNX causal LM on onnxruntime (CPU): greedy or sampled.

Reads a model directory holding model.onnx (Optimum / onnxruntime-genai input
layout, plain ops or GroupQueryAttention), tokenizer.json and the HF json side files.
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
from workers.slm.decoding import Decoded, FusedRunner, KvLayout, PlainRunner, decode
from workers.slm.sampling import Sampling, StopMatcher, per_row, sample

_PAST_RE = re.compile(r"past_key_values\.(\d+)\.(key|value)")
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
WARMUP_PROMPT = [{"role": "user", "content": "Hello"}]


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


def session_options(threads: int, *, spin: bool = True) -> Any:
    """CPU options for small-batch decoding: all graph fusions, fixed thread pool, arena."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1  # a decoder is one long chain: op parallelism only adds overhead
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = True  # steps reuse same-sized buffers
    # Shapes change every step (cache length), so memory-pattern planning never hits.
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    # Spinning workers shave a few ms per step but burn a core while idle between batches.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


class SlmEngine:
    def __init__(
        self, model_dir: str | Path, *, threads: int = 2, warmup: bool = True, spin: bool = True
    ) -> None:
        import onnx
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

        try:
            self._session = ort.InferenceSession(
                str(model_path), session_options(threads, spin=spin), providers=["CPUExecutionProvider"]
            )
            graph = onnx.load(str(model_path), load_external_data=False).graph
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(f"onnxruntime cannot load {model_path}: {exc}") from exc
        # GroupQueryAttention graphs keep the cache in a different convention (see decoding.py).
        self.fused = any(node.op_type == "GroupQueryAttention" for node in graph.node)

        inputs = {i.name: i for i in self._session.get_inputs()}
        past = sorted((int(m.group(1)), m.group(2)) for n in inputs if (m := _PAST_RE.fullmatch(n)))
        if not past or "input_ids" not in inputs:
            raise ConfigError(
                f"{model_path} has no past_key_values.* inputs: export it with a KV cache "
                "(e.g. optimum-cli export onnx --task text-generation-with-past)"
            )
        if self.fused and "attention_mask" not in inputs:
            raise ConfigError(f"{model_path} uses GroupQueryAttention but has no attention_mask input")
        past_names = [f"past_key_values.{i}.{kind}" for i, kind in past]
        first = inputs[past_names[0]]
        kv_heads = first.shape[1] if isinstance(first.shape[1], int) else config.get("num_key_value_heads")
        head_dim = first.shape[3] if isinstance(first.shape[3], int) else config.get("head_dim")
        self._layout = KvLayout(
            past_names=past_names,
            present_names=[f"present.{i}.{kind}" for i, kind in past],
            kv_heads=int(kv_heads or config.get("num_attention_heads", 0)),
            head_dim=int(head_dim or config["hidden_size"] // config["num_attention_heads"]),
            dtype=_ORT_FLOAT.get(first.type, np.float32),
            inputs=set(inputs),
        )

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
        if warmup:  # first runs allocate the arena and pick kernels: keep that off the first query
            self.generate([WARMUP_PROMPT, WARMUP_PROMPT], max_tokens=2)

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

    def encode(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a chat prompt, chat template applied, ready for generation."""
        ids = self._tokenizer.encode(self._render(messages), add_special_tokens=False).ids
        if not ids:
            raise PermanentError("prompt renders to zero tokens")
        if len(ids) >= self._max_positions:
            raise PermanentError(
                f"prompt has {len(ids)} tokens, the model's context is {self._max_positions}"
            )
        return ids

    def generate(
        self,
        prompts: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_tokens: int | Sequence[int],
        temperature: float | Sequence[float] = 0.0,
        top_p: float | Sequence[float] = 1.0,
        seed: int | Sequence[int | None] | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """Decode each chat prompt; all prompts go through one padded batch.

        Scalars apply to every prompt; sequences give per-prompt values, so one batch can
        mix queries. temperature 0 is greedy. A row with the same seed and prompt samples
        the same tokens whatever else is in its batch (one generator per row).
        Generation stops at EOS, at a stop string (cut from the text) or at max_tokens.
        """
        if not prompts:
            return []
        n = len(prompts)
        budgets = per_row(max_tokens, n, "max_tokens")
        if any(m < 1 for m in budgets):
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        params = [
            Sampling(float(t), float(p), s)
            for t, p, s in zip(
                per_row(temperature, n, "temperature"), per_row(top_p, n, "top_p"), per_row(seed, n, "seed"),
                strict=True,
            )
        ]
        encoded = [self.encode(p) for p in prompts]
        limits = [min(m, self._max_positions - len(ids)) for m, ids in zip(budgets, encoded, strict=True)]
        matcher = StopMatcher(stop, lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True))
        decoded = self.decode_ids(encoded, limits, params, stop=matcher)
        results = []
        rows = zip(encoded, decoded.tokens, decoded.logprobs, decoded.reasons, strict=True)
        for ids, toks, lps, reason in rows:
            text_ids = [t for t in toks if t not in self._eos]
            text = self._tokenizer.decode(text_ids, skip_special_tokens=True)
            if matcher:
                text, _ = matcher.cut(text)
            confidence = float(np.exp(np.mean(lps))) if lps else 0.0
            results.append(
                Generation(
                    # a cut at max_tokens can split a UTF-8 sequence: drop the dangling replacement char
                    text=text.rstrip("\ufffd"),
                    prompt_tokens=len(ids),
                    completion_tokens=len(text_ids),
                    confidence=min(1.0, max(0.0, confidence)),
                    finish_reason=reason,
                )
            )
        return results

    def decode_ids(
        self,
        encoded: list[list[int]],
        limits: list[int],
        params: Sequence[Sampling] | None = None,
        *,
        stop: StopMatcher | None = None,
        forced: list[list[int]] | None = None,
        ignore_eos: bool = False,
    ) -> Decoded:
        """Token-level decoding (what generate and the benchmark share). `forced` feeds the
        given continuations (teacher forcing, EOS ignored) while recording greedy picks."""
        params = list(params) if params is not None else [Sampling()] * len(encoded)
        rngs = [np.random.default_rng(p.seed) for p in params]
        runner_type = FusedRunner if self.fused else PlainRunner
        greedy = all(p.greedy for p in params)
        return decode(
            runner_type(self._session, self._layout, self._pad),
            encoded,
            limits,
            None if greedy else (lambda row, logits: sample(logits, params[row], rngs[row])),
            eos=self._eos,
            forced=forced,
            stop_hit=(lambda row, toks: stop.hit(toks)) if stop else None,
            ignore_eos=ignore_eos,
        )


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
