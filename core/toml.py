"""TOML reading on every supported Python: ``tomllib`` (3.11+) or its backport ``tomli`` (3.10)."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pyproject.toml pulls tomli there
    import tomli as tomllib  # type: ignore[no-redef]

loads = tomllib.loads
TOMLDecodeError = tomllib.TOMLDecodeError

__all__ = ["TOMLDecodeError", "loads"]
