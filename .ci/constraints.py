"""Write constraints.txt: pyproject's runtime dependencies and everything they pull in, at the
versions installed in this venv (what the tests ran against). The Docker image installs with it;
`pip install .` does not. Run from the repository root: .venv/bin/python .ci/constraints.py"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

HEADER = """\
# Exact versions for the Docker image only (`pip install -c constraints.txt`): the runtime
# dependencies of pyproject.toml and everything they pull in, as installed in the tested venv
# (pip freeze, filtered to that closure; Python 3.11, Linux). `pip install .` ignores this file.
# Regenerate after changing dependencies: .venv/bin/python .ci/constraints.py
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> dict[str, tuple[str, str]]:
    """key -> (distribution name, installed version) for the requirements and their own, with
    extras left out (no marker with extra == '' is ever true for a plain install)."""
    found: dict[str, tuple[str, str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        if _key(req.name) in found:
            continue
        dist = metadata.distribution(req.name)
        found[_key(req.name)] = (dist.metadata["Name"], dist.version)
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def main() -> None:
    deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    pins = closure(deps)
    lines = [f"{name}=={version}" for _, (name, version) in sorted(pins.items())]
    Path("constraints.txt").write_text(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
