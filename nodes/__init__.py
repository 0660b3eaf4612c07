"""ComfyUI nodes. Every module in this package that defines ``NODES`` (a list of ``io.ComfyNode``
classes) is collected here; a module that fails to import is logged and skipped so one broken
feature does not take the whole pack down."""

from __future__ import annotations

import importlib
import logging
import pkgutil

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger(__name__)

CATEGORY = "Instruct Identity"


def node_classes() -> list[type[io.ComfyNode]]:
    found: list[type[io.ComfyNode]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception:  # noqa: BLE001 - report and keep the other features working
            log.exception("Instruct Identity: could not load nodes from %s", info.name)
            continue
        found.extend(getattr(module, "NODES", []))
    return found


class InstructIdentityExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()


async def comfy_entrypoint() -> InstructIdentityExtension:
    from . import _model_hints

    _model_hints.install()
    return InstructIdentityExtension()
