"""This pack's version, from its installed package metadata (pyproject.toml): the one answer to
``--version`` on every command-line tool."""

from __future__ import annotations

DIST_NAME = "comfyui-instruct-identity"


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
