"""The built-in demo's loader nodes: the miniature FLUX as MODEL + VAE + CLIP, and a bundled reference.

Thin classes over ``miniature/demo.py``; everything after them in the demo graph is the real path
(stock LoraLoaderModelOnly, Instruct Identity Reference, KSampler, Decode Target, Save Image).
"""

from __future__ import annotations

import sys

from comfy_api.latest import io, ui

from ..miniature import demo
from . import CATEGORY

demo.register_folders()


def _template_order() -> None:
    """Inside a running ComfyUI (its ``server`` module loaded, never imported from here) put the demo
    first in the template browser."""
    server = sys.modules.get("server")
    app = getattr(getattr(getattr(server, "PromptServer", None), "instance", None), "app", None)
    if app is not None:
        demo.install_template_order(app)


_template_order()


class InstructIdentityDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityDemoModel",
            display_name="Instruct Identity Demo Model",
            category=f"{CATEGORY}/Demo",
            description=("Loads the pack's built-in miniature FLUX (a few MB, runs on a CPU in seconds): the model, "
                         "its VAE-like pixel codec and its text encoder, rebuilt from the file's metadata. Connect "
                         "the model through LoraLoaderModelOnly (the demo identity LoRA is in the LoRA list) to the "
                         "Instruct Identity Reference node, exactly as with FLUX.1."),
            inputs=[
                io.Combo.Input("base", options=demo.base_names(), default=demo.BASE_NAME,
                               tooltip="A miniature base file from the pack's demo/models or models/instruct_identity_demo."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Clip.Output(display_name="CLIP"),
                io.Vae.Output(display_name="VAE"),
                io.String.Output(display_name="info"),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, base):
        return demo.file_fingerprint(demo.base_path, base)

    @classmethod
    def execute(cls, base) -> io.NodeOutput:
        m = demo.load_demo(base)
        return io.NodeOutput(m.model, m.clip, m.vae, m.info)


class InstructIdentityDemoReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InstructIdentityDemoReference",
            display_name="Instruct Identity Demo Reference",
            category=f"{CATEGORY}/Demo",
            description=("A reference character bundled with the pack (demo/references), drawn in the miniature "
                         "world's style. For your own pictures use Load Image."),
            inputs=[io.Combo.Input("reference", options=demo.reference_names(), tooltip="A bundled reference sprite.")],
            outputs=[io.Image.Output(display_name="IMAGE")],
        )

    @classmethod
    def fingerprint_inputs(cls, reference):
        return demo.file_fingerprint(demo.reference_path, reference)

    @classmethod
    def execute(cls, reference) -> io.NodeOutput:
        image = demo.load_reference(reference)
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [InstructIdentityDemoModel, InstructIdentityDemoReference]
