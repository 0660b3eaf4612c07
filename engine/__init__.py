"""The model floor: ComfyUI model-level code and no UI.

Between the torch-only ``core/`` and the features (``training/``, ``charis/``, ``curation/``,
``miniature/``) and the UI (``nodes/``): the reference sampler patch (``patch``), the regional
attention patch (``regional``), the one identity sampling recipe (``sampling``), ComfyUI's in-process
set-up (``runtime``) and the small random-weight model builders (``synthetic``). Everything here needs
ComfyUI importable (``runtime.setup_comfyui``) and imports nothing above it.
"""
