"""What the trainer asks of a model file that may be a miniature base (``training/steps.py``).

A miniature base carries its FLUX config, codec and text encoder in its safetensors metadata
(``miniature.files``), so with ``pretrained_model_name_or_path`` pointing at one the trainer needs no
``ae`` / ``clip_l``: the pixel codec and the word encoder are rebuilt from the metadata, the model
through ``miniature.load_base``. Any other file gets ``None`` and the trainer loads FLUX as usual.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from . import files


def spec_of(path: str | Path | None) -> files.BaseSpec | None:
    """The file's :class:`~miniature.files.BaseSpec`, or None if it is not a miniature base."""
    if not path or not str(path).endswith(".safetensors") or not Path(path).is_file():
        return None
    try:
        meta = files.read_metadata(path)
    except Exception:  # noqa: BLE001 - not readable as safetensors: not a miniature base
        return None
    if meta.get("format") != files.FORMAT:
        return None
    try:
        return files.BaseSpec.from_metadata(meta)
    except (ValueError, KeyError) as e:
        raise _unreadable(path, e) from e


def _unreadable(path, error: Exception) -> InputError:
    return InputError("pretrained_model_name_or_path", f"{path} is a miniature base file that this version of the "
                      f"pack cannot rebuild ({error}).", "Re-export it with miniature.save_base, or update the pack.")


def encoders_of(path: str | Path | None):
    """(codec, text encoder) of a miniature base, without loading its weights; None for other files."""
    spec = spec_of(path)
    if spec is None:
        return None
    try:
        return files.make_codec(spec.codec), files.make_text_encoder(spec.text_encoder)
    except (ValueError, KeyError) as e:
        raise _unreadable(path, e) from e


def model_of(path: str | Path | None):
    """The miniature base's model (a ComfyUI ModelPatcher, fp32); None for other files."""
    if spec_of(path) is None:
        return None
    try:
        return files.load_base(path).model
    except (ValueError, KeyError) as e:
        raise _unreadable(path, e) from e
