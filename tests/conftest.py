"""Shared test setup.

hypothesis is imported up front: CPython 3.11.7 can raise a spurious "AST constructor recursion
depth mismatch" SystemError when pytest's assertion rewriter first compiles it late in a session
that has run background threads (CPython gh-106905).
"""

import hypothesis  # noqa: F401
