"""The pack installs as the package `instruct_identity` with every subpackage and its CLIs."""

import importlib
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP = {"tests", "benchmarks", "scripts", "workflows", "js", "docs", ".venv", ".comfyui", ".cache", "node_modules"}


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_for_wheels():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"instruct_identity"}
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts and (rel.parts[0] in SKIP or any(p.startswith(".") for p in rel.parts)):
            continue
        if rel.parts:
            found.add("instruct_identity." + ".".join(rel.parts))
    assert found == listed, f"missing from pyproject: {found - listed}; listed but absent: {listed - found}"


def test_console_scripts_resolve():
    for name, target in _pyproject()["project"]["scripts"].items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_comfy_registry_metadata():
    meta = _pyproject()
    comfy = meta["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert meta["project"]["license"] and meta["project"]["urls"]
