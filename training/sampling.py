"""Preview images during training, made exactly as the nodes make them: ComfyUI's own sampler
(``comfy.sample.sample``) on the training model, through the pack's one identity recipe
(``engine.sampling``: clean reference in the right half of every model input).

``sample_prompts`` is a ``.txt`` file of kohya-style lines::

    a knight riding a horse, white background --ref refs/knight.png --w 512 --h 512 --s 20 --d 42 --g 3.5

(``--ref`` reference image, ``--w/--h`` target size, ``--s`` steps, ``--d`` seed, ``--g`` FLUX guidance,
``--l`` CFG scale, ``--n`` negative prompt; ``#`` starts a comment), or a ``.jsonl`` file of objects with
``prompt``, ``reference``, ``width``, ``height``, ``sample_steps``, ``seed``, ``guidance_scale``,
``scale``, ``negative_prompt``. Paths are relative to the prompt file.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import InputError
from ..core.files import atomic_write_bytes
from ..core.imagefile import png_bytes
from .dataset import SPATIAL_MULTIPLE, load_image

log = logging.getLogger(__name__)


@dataclass
class SamplePrompt:
    prompt: str
    reference: Path | None = None
    width: int = 512
    height: int = 512
    steps: int = 20
    seed: int = 42
    guidance: float = 3.5
    cfg: float = 1.0
    negative: str = ""


@dataclass
class PreparedSample:
    spec: SamplePrompt
    cond: torch.Tensor
    pooled: torch.Tensor | None
    neg_cond: torch.Tensor
    neg_pooled: torch.Tensor | None
    reference: torch.Tensor | None  # VAE-space latent [1, C, h, w]


_FLAGS = {"--ref": ("reference", str), "--w": ("width", int), "--h": ("height", int), "--s": ("steps", int),
          "--d": ("seed", int), "--g": ("guidance", float), "--l": ("cfg", float), "--n": ("negative", str)}
_JSON = {"prompt": "prompt", "reference": "reference", "width": "width", "height": "height",
         "sample_steps": "steps", "steps": "steps", "seed": "seed", "guidance_scale": "guidance",
         "scale": "cfg", "negative_prompt": "negative"}


def parse_prompts(path: str | Path, *, width: int, height: int, seed: int) -> list[SamplePrompt]:
    path = Path(path)
    if not path.is_file():
        raise InputError("sample_prompts", f"{path} does not exist.", "Point it at a .txt or .jsonl prompt file.")
    out: list[SamplePrompt] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        values: dict = {"width": width, "height": height, "seed": seed}
        if path.suffix.lower() in (".jsonl", ".json"):
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InputError("sample_prompts", f"{path.name} line {n} is not JSON ({e}).") from e
            for k, v in row.items():
                if k not in _JSON:
                    raise InputError("sample_prompts", f"{path.name} line {n}: unknown field {k!r}.",
                                     f"Use {', '.join(sorted(_JSON))}.")
                values[_JSON[k]] = v
        else:
            parts = line.split(" --")
            values["prompt"] = parts[0].strip()
            for part in parts[1:]:
                flag, _, arg = part.partition(" ")
                flag = "--" + flag
                if flag not in _FLAGS:
                    raise InputError("sample_prompts", f"{path.name} line {n}: unknown option {flag}.",
                                     f"Use {', '.join(_FLAGS)}.")
                name, kind = _FLAGS[flag]
                arg = arg.strip()
                values[name] = kind(shlex.split(arg)[0] if kind is str and arg.startswith(("'", '"')) else arg)
        if values.get("reference"):
            ref = Path(values["reference"]).expanduser()
            values["reference"] = ref if ref.is_absolute() else path.parent / ref
        for k in ("width", "height"):
            values[k] = max(SPATIAL_MULTIPLE, int(round(int(values[k]) / SPATIAL_MULTIPLE)) * SPATIAL_MULTIPLE)
        out.append(SamplePrompt(**values))
    return out


def prepare(prompts: list[SamplePrompt], text_encoder, vae, mode: str) -> list[PreparedSample]:
    """Encode prompts and references now, while the encoders are loaded (they are freed before training)."""
    out = []
    for p in prompts:
        cond, pooled = text_encoder.encode(p.prompt)
        if p.negative:
            neg, neg_pooled = text_encoder.encode(p.negative)
        else:
            neg, neg_pooled = torch.zeros_like(cond), (torch.zeros_like(pooled) if pooled is not None else None)
        ref = None
        if mode == "identity":
            if p.reference is None:
                raise InputError("sample_prompts", f"the prompt '{p.prompt[:40]}' has no --ref reference image.",
                                 "Add --ref path/to/reference.png (identity mode samples need a reference).")
            if not Path(p.reference).is_file():
                raise InputError("sample_prompts", f"reference {p.reference} does not exist.")
            ref = vae.encode(load_image(Path(p.reference), (p.width, p.height))).cpu()
        out.append(PreparedSample(p, cond, pooled, neg, neg_pooled, ref))
    return out


def render(patcher, sample: PreparedSample, vae, *, sampler: str, scheduler: str, mode: str) -> torch.Tensor:
    """One preview: the decoded H x 2W diptych (identity mode) or the image (grid mode), ``[1, H, W, 3]``."""
    from ..engine.sampling import conditioning, sample_identity, sample_text_to_image

    s = sample.spec
    positive = conditioning(sample.cond, sample.pooled, s.guidance)
    negative = conditioning(sample.neg_cond, sample.neg_pooled, s.guidance)
    opts = dict(seed=s.seed, steps=s.steps, cfg=s.cfg, sampler=sampler, scheduler=scheduler)
    if mode == "identity":
        out = sample_identity(patcher, sample.reference, positive, negative, **opts)
    else:
        down = int(getattr(vae, "downscale", 8))
        channels = int(patcher.model.latent_format.latent_channels)
        out = sample_text_to_image(patcher, (1, channels, s.height // down, s.width // down), positive, negative,
                                   **opts)
    return vae.decode(out)


def sample_all(patcher, samples: list[PreparedSample], vae, *, out_dir: Path, name: str, step: int, sampler: str,
               scheduler: str, mode: str) -> list[Path]:
    """Render every prompt and write ``<out_dir>/<name>_<step>_<i>.png``; the training RNG is untouched."""
    paths = []
    dm = patcher.model.diffusion_model
    was_training = dm.training
    dm.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for i, smp in enumerate(samples):
                image = render(patcher, smp, vae, sampler=sampler, scheduler=scheduler, mode=mode)
                path = Path(out_dir) / f"{name}_{step:06d}_{i:02d}.png"
                atomic_write_bytes(path, png_bytes(image))
                paths.append(path)
    finally:
        dm.train(was_training)
    log.info("step %d: %d sample image(s) in %s", step, len(paths), out_dir)
    return paths
