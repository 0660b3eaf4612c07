"""Instruct Identity for ComfyUI.

ComfyUI imports this folder as a custom node pack (by its path, hence relative imports only); the
same folder is installed as the Python package ``instruct_identity`` for the trainer, the CHARIS CLI
and the tests. The nodes load only where ComfyUI is importable.
"""

WEB_DIRECTORY = "./js"

try:  # ComfyUI present: expose the V3 entry point
    import comfy_api.latest  # noqa: F401
except ImportError:  # plain library use (trainer, CHARIS CLI) without ComfyUI
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
