"""Shared test setup.

hypothesis is imported up front: CPython 3.11.7 can raise a spurious "AST constructor recursion
depth mismatch" SystemError when pytest's assertion rewriter first compiles it late in a session
that has run background threads (CPython gh-106905).
"""

import os

import hypothesis  # noqa: F401
import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long soak/load runs (`slow`) run only with POINTSMAN_SLOW=1; CI runs everything else."""
    if os.environ.get("POINTSMAN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set POINTSMAN_SLOW=1 to run soak/load tests")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
