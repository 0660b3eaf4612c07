"""Torch-only core shared by the nodes and the trainer (imports neither ComfyUI nor peft)."""
