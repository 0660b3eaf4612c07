"""The Instruct Identity LoRA trainer: FLUX with [noisy target | clean reference] latents and the
paper's masked flow-matching loss, on ComfyUI's own FLUX modules (peft LoRA, accelerate).

Entry points: ``ii-train`` (:mod:`.cli`) and :func:`.trainer.train`. Modules that import ComfyUI
(``model``, ``trainer``, ``sampling``) need it importable first (``engine.runtime.setup_comfyui``); the others
(``config``, ``dataset``, ``objective``, ``lora``, ``schedule``, ``cache``) do not.
"""
