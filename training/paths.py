"""Where a training run may read and write: the policy of the *Train LoRA* node.

The command line trains whatever its user points it at. A ComfyUI server, though, takes graphs from
anyone who can reach its HTTP API (and takes file uploads into its input folder), so a run started by
the node reads only inside ComfyUI's folders and writes only inside its output folder, unless the
server's owner lists more folders in ``II_TRAIN_ALLOWED_DIRS`` (``os.pathsep``-separated):

* reads: the trainer TOML, the dataset (TOML or JSONL, its folders and every picture it names), the
  preview prompts and their reference pictures: inside ComfyUI's input, output or user folder;
* model files: inside ComfyUI's model folders (bare names are looked up there), and only
  ``.safetensors`` (a pickle-based checkpoint can run code when loaded);
* writes: ``output_dir``, ``logging_dir``, ``cache_dir``: inside ComfyUI's output folder.

Paths are compared as ComfyUI compares them (absolute, normalised: ``..`` cannot climb out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError

ENV = "II_TRAIN_ALLOWED_DIRS"
SAFE_MODEL_SUFFIXES = (".safetensors", ".sft")
MODEL_KEYS = {"pretrained_model_name_or_path": "diffusion_models", "ae": "vae", "clip_l": "text_encoders",
              "t5xxl": "text_encoders"}
WRITE_KEYS = ("output_dir", "logging_dir", "cache_dir")
READ_KEYS = ("dataset_config", "sample_prompts", "comfyui_path")
DATASET_PATH_KEYS = ("manifest", "image_dir", "conditioning_data_dir", "reference_dir")


def _norm(path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def inside(path, roots) -> bool:
    p = _norm(path)
    for root in roots:
        r = _norm(root)
        try:
            if os.path.commonpath([p, r]) == r:
                return True
        except ValueError:  # different drives
            continue
    return False


def env_dirs() -> tuple[Path, ...]:
    return tuple(Path(_norm(d)) for d in os.environ.get(ENV, "").split(os.pathsep) if d.strip())


@dataclass(frozen=True)
class PathPolicy:
    read: tuple[Path, ...]
    write: tuple[Path, ...]
    models: tuple[Path, ...] = field(default_factory=tuple)
    names: dict = field(default_factory=dict, compare=False)   # root -> how to call it in messages

    @classmethod
    def comfyui(cls) -> "PathPolicy":
        """ComfyUI's input/output/user folders and model folders, plus ``II_TRAIN_ALLOWED_DIRS``."""
        import folder_paths

        inp, out, user = (Path(folder_paths.get_input_directory()), Path(folder_paths.get_output_directory()),
                          Path(folder_paths.get_user_directory()))
        extra = env_dirs()
        models = []
        for name, entry in folder_paths.folder_names_and_paths.items():
            if name in ("custom_nodes", "configs"):
                continue
            models += [Path(p) for p in entry[0]]
        names = {str(inp): "ComfyUI's input folder", str(out): "ComfyUI's output folder",
                 str(user): "ComfyUI's user folder"}
        return cls((inp, out, user, *extra), (out, *extra), tuple(models), names)

    def _where(self, roots) -> str:
        return ", ".join(self.names.get(str(r), str(r)) for r in roots)

    def check_read(self, path, name: str) -> Path:
        if not inside(path, self.read + self.write):
            raise InputError(name, f"{path} is outside the folders this ComfyUI server reads ({self._where(self.read)}).",
                             f"Put the file inside ComfyUI's input, output or user folder, or ask the server's owner to "
                             f"list its folder in {ENV} (docs/limits.md).")
        return Path(_norm(path))

    def check_write(self, path, name: str) -> Path:
        if not inside(path, self.write):
            raise InputError(name, f"{path} is outside the folders this ComfyUI server writes ({self._where(self.write)}).",
                             f"Set {name} to a folder inside ComfyUI's output folder, or ask the server's owner to list "
                             f"it in {ENV} (docs/limits.md).")
        return Path(_norm(path))

    def check_model(self, value: str | None, name: str) -> None:
        if not value:
            return
        if not str(value).lower().endswith(SAFE_MODEL_SUFFIXES):
            raise InputError(name, f"{value} is not a .safetensors file; other checkpoint formats are pickle-based "
                                   "and can run code when loaded, so this node never loads them.",
                             "Convert the model to .safetensors (or train from the command line, ii-train).")
        is_path = os.path.isabs(str(value)) or "/" in str(value) or os.sep in str(value)
        if is_path and not inside(value, self.models + self.read + self.write):
            raise InputError(name, f"{value} is outside ComfyUI's model folders.",
                             f"Put the file in ComfyUI's models/{MODEL_KEYS.get(name, '')} folder and give its name, or "
                             f"ask the server's owner to list its folder in {ENV}.")

    # ---- a whole run ------------------------------------------------------------------------------

    def check_config(self, cfg) -> None:
        """Every path of a trainer config: before anything is read or written."""
        for key in WRITE_KEYS:
            value = {"logging_dir": cfg.resolved_logging_dir, "cache_dir": cfg.resolved_cache_dir}.get(key, cfg.output_dir)
            self.check_write(value, key)
        for key in READ_KEYS:
            value = getattr(cfg, key, None)
            if value:
                self.check_read(value, key)
        for key in MODEL_KEYS:
            self.check_model(getattr(cfg, key, None), key)
        if cfg.dataset_config:
            self.check_dataset_config(Path(cfg.dataset_config))

    def check_dataset_config(self, path: Path) -> None:
        """The folders and manifests a kohya dataset TOML names (before they are listed or read)."""
        if path.suffix.lower() in (".jsonl", ".json") or not path.is_file():
            return
        from ..core import toml

        try:
            raw = toml.loads(path.read_text(encoding="utf-8"))
        except (toml.TOMLDecodeError, UnicodeDecodeError):
            return  # the trainer reports it
        tables = [raw.get("general", {})]
        for ds in raw.get("datasets", []) or []:
            if isinstance(ds, dict):
                tables.append(ds)
                tables += [s for s in ds.get("subsets", []) or [] if isinstance(s, dict)]
        for table in tables:
            if not isinstance(table, dict):
                continue
            for key in DATASET_PATH_KEYS:
                value = table.get(key)
                if isinstance(value, str) and value:
                    p = Path(value).expanduser()
                    self.check_read(p if p.is_absolute() else path.parent / p, f"dataset_config ({key})")

    def check_pairs(self, pairs) -> None:
        """Every picture a dataset names (before any is opened)."""
        for pair in pairs:
            for p in (pair.target, *pair.references):
                if p is not None:
                    self.check_read(p, f"dataset_config ({pair.source})")

    def check_samples(self, prompts) -> None:
        for p in prompts:
            if getattr(p, "reference", None):
                self.check_read(p.reference, "sample_prompts (--ref)")
