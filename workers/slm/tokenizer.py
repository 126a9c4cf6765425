"""Byte-level BPE tokenizer construction and the HF side files of a model dir.

A model directory the engine reads holds, next to model.onnx:
    tokenizer.json, config.json, generation_config.json, tokenizer_config.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Same as SmolLM2's / StarCoder's ChatML template, without the default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for byte in range(256):
        if byte not in bs:
            bs.append(byte)
            cs.append(256 + n)
            n += 1
    return {byte: chr(c) for byte, c in zip(bs, cs, strict=True)}


def build_bpe_tokenizer(
    tokens: Sequence[str],
    merges: Sequence[str | tuple[str, str]],
    special_tokens: Sequence[str],
    *,
    split_digits: bool = True,
) -> Tokenizer:
    """Byte-level BPE where token id == index in `tokens`.

    `split_digits` reproduces the "smollm" pre-tokenizer (each digit its own
    pre-token, then the GPT-2 regex) that SmolLM2 was trained with.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    # ByteLevel post-processing only fixes offsets: no BOS is prepended, the
    # chat template carries every special token the model expects.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    return tok


def write_model_files(
    dst: Path,
    *,
    config: dict[str, Any],
    tokenizer: Tokenizer,
    model_name: str,
    bos_token_id: int | None,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None,
    chat_template: str | None,
) -> None:
    """Write tokenizer.json, config.json, generation_config.json, tokenizer_config.json."""
    dst = Path(dst)
    tokenizer.save(str(dst / "tokenizer.json"))
    eos = list(eos_token_ids)
    full_config = {
        **config,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
        "pad_token_id": pad_token_id,
        "pointsman_model_name": model_name,
    }
    _dump(dst / "config.json", full_config)
    _dump(
        dst / "generation_config.json",
        {
            "bos_token_id": bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": pad_token_id,
            "do_sample": False,
        },
    )

    def tok_str(i: int | None) -> str | None:
        return None if i is None else tokenizer.id_to_token(i)

    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "bos_token": tok_str(bos_token_id),
        "eos_token": tok_str(eos[0]) if eos else None,
        "pad_token": tok_str(pad_token_id),
        "model_max_length": config.get("max_position_embeddings"),
        "clean_up_tokenization_spaces": False,
    }
    if chat_template:
        tok_config["chat_template"] = chat_template
    _dump(dst / "tokenizer_config.json", tok_config)


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
