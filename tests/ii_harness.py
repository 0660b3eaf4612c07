"""Test harness: a real ComfyUI, in-process (for unit tests) or as a server (for end-to-end tests),
and small random-weight models that the tests build themselves (no downloads, ever).

Used by every feature's tests; import it as ``import ii_harness`` (conftest puts ``tests/`` on the path).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instruct_identity.engine import runtime, synthetic

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "test-models"
log = logging.getLogger("ii_harness")


# --------------------------------------------------------------------------------------------------
# ComfyUI in-process


def comfy_root() -> Path:
    for var in ("II_COMFYUI_PATH", "COMFYUI_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var]).resolve()
    return REPO / ".comfyui" / "ComfyUI"


def setup_comfy() -> Path:
    """Make ComfyUI importable in this process, on the CPU, without parsing pytest's argv."""
    root = comfy_root()
    if not (root / "main.py").exists():
        raise RuntimeError(f"No ComfyUI at {root}: run scripts/bootstrap.sh setup (or set COMFYUI_PATH).")
    return runtime.setup_comfyui(root, cpu=True)


# The model builders live in the pack (engine/synthetic.py); these wrappers only make sure ComfyUI is
# importable first.
init_random_ = synthetic.init_random_
tiny_flux_config = synthetic.tiny_flux_config
flux_conditioning = synthetic.flux_conditioning
TINY_FAMILIES = synthetic.TINY_FAMILIES


def tiny_flux(family: str = "flux", seed: int = 0, **kw):
    """A ModelPatcher around a small random FLUX-family model, built in-process on the CPU."""
    setup_comfy()
    return synthetic.tiny_flux(family, seed=seed, **kw)


def tiny_sd15():
    """A small random SD1.5-style UNet (a model that is *not* a FLUX-family DiT)."""
    setup_comfy()
    return synthetic.tiny_sd15()


# --------------------------------------------------------------------------------------------------
# Random model files that ComfyUI's stock loaders detect (for the server tests)

MODEL_FILES_VERSION = "v1"


def _save(sd: dict, path: Path, dtype=torch.bfloat16) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().to(dtype).contiguous() for k, v in sd.items()}, str(tmp))
    os.replace(tmp, path)


def _random_sd(module: torch.nn.Module, seed: int) -> dict:
    init_random_(module, seed=seed)
    return {k: v for k, v in module.state_dict().items()}


def build_flux_file(path: Path, family: str = "flux", seed: int = 0) -> Path:
    """A FLUX.1 file that ``comfy.model_detection`` recognises: hidden 3072 / 24 heads are fixed by
    detection; one double + one single block and a 768-wide text input keep it ~0.5 B params,
    so a random CLIP-L can drive it."""
    setup_comfy()
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    cfg = tiny_flux_config("flux_fill" if family == "flux_fill" else "flux", hidden=3072, heads=24, context=768, vec=768)
    cfg.update(axes_dim=[16, 56, 56])
    cfg.pop("image_model")
    model = Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **cfg)
    _save(_random_sd(model, seed), path)
    return path


def build_flux_vae_file(path: Path, seed: int = 0) -> Path:
    """The 16-channel FLUX autoencoder shape (84 M params), random weights."""
    setup_comfy()
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    dd = dict(double_z=True, z_channels=16, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
              num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    sd = {}
    for prefix, cls in (("encoder.", Encoder), ("decoder.", Decoder)):
        m = cls(**dd)
        sd.update({prefix + k: v for k, v in _random_sd(m, seed).items()})
    _save(sd, path, dtype=torch.float32)
    return path


def build_clip_l_file(path: Path, seed: int = 0) -> Path:
    setup_comfy()
    import comfy.sd1_clip

    m = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd = _random_sd(m, seed)
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in sd.items()}
    _save(sd, path, dtype=torch.float32)
    return path


STANDARD_FILES = {
    # folder, file name  ->  builder
    ("diffusion_models", "flux1-dev.safetensors"): lambda p: build_flux_file(p, "flux"),
    ("diffusion_models", "flux1-fill-dev.safetensors"): lambda p: build_flux_file(p, "flux_fill", seed=1),
    ("vae", "ae.safetensors"): build_flux_vae_file,
    ("text_encoders", "clip_l.safetensors"): build_clip_l_file,
}


def model_files(names=None) -> Path:
    """Build (once, cached under .cache/test-models) the random model files; returns the models dir."""
    root = CACHE / MODEL_FILES_VERSION / "models"
    for (folder, name), builder in STANDARD_FILES.items():
        if names is not None and name not in names:
            continue
        path = root / folder / name
        if not path.exists():
            t = time.time()
            builder(path)
            log.info("built %s in %.1fs", path, time.time() - t)
    return root


# --------------------------------------------------------------------------------------------------
# ComfyUI as a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    base: Path
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path = field(default=None)  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        root = setup_comfy()
        self.log_path = self.base / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--verbose", "INFO"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-5000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log_text()[-5000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        if status != 200:
            raise AssertionError(f"/prompt refused the graph ({status}): {json.dumps(body, indent=1)[:4000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """The /history entry of a finished prompt (raises with the server's error if it failed)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                st = entry.get("status", {})
                if st.get("completed") or st.get("status_str") in ("success", "error"):
                    return entry
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_text()[-5000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} not finished in {timeout}s:\n{self.log_text()[-3000:]}")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(prompt), timeout)


def error_messages(entry: dict) -> list[str]:
    """The execution_error messages of a /history entry."""
    out = []
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            out.append(f"{data.get('node_type')}: {data.get('exception_message')}")
    return out


def start_server(base: Path, models: Path | None = None) -> ComfyServer:
    """A ComfyUI server whose base directory is ``base``, with this pack in custom_nodes and the
    random model files linked into models/."""
    for d in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / d).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "instruct-identity"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    if models is not None:
        for f in models.rglob("*.safetensors"):
            dest = base / "models" / f.relative_to(models)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(f)
    return ComfyServer(base, free_port()).start()


def build_flux_lora_file(path: Path, rank: int = 4, seed: int = 0) -> Path:
    """A random kohya-format LoRA for the random flux1-dev file (img_in, one attention, one single block)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"img_in": (3072, 64), "double_blocks_0_img_attn_qkv": (9216, 3072), "single_blocks_0_linear2": (3072, 15360)}
    sd = {}
    for name, (out_f, in_f) in shapes.items():
        sd[f"lora_unet_{name}.lora_down.weight"] = 0.02 * torch.randn(rank, in_f, generator=g)
        sd[f"lora_unet_{name}.lora_up.weight"] = 0.02 * torch.randn(out_f, rank, generator=g)
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(float(rank))
    _save(sd, path, dtype=torch.float32)
    return path


STANDARD_FILES[("loras", "instruct_identity_flux1_dev.safetensors")] = build_flux_lora_file


# --------------------------------------------------------------------------------------------------
# Workflows (UI format) against a running server's /object_info

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _input_specs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            specs.append((name, info["input"][section][name]))
    return specs


def _is_widget(spec) -> bool:
    t, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if opts.get("forceInput"):
        return False
    return isinstance(t, list) or t in WIDGET_TYPES


def _combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return (spec[1] or {}).get("options")
    return None


def check_workflow(workflow: dict, object_info: dict) -> tuple[list[str], dict]:
    """Problems found in a UI-format workflow (missing node types, link type mismatches, invalid
    widget values) and its API-format prompt."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {lk[0]: lk for lk in workflow["links"]}
    prompt: dict = {}
    for n in workflow["nodes"]:
        t = n["type"]
        if t in FRONTEND_ONLY or n.get("mode", 0) in (2, 4):
            continue
        info = object_info.get(t)
        if info is None:
            problems.append(f"node {n['id']}: type {t} does not exist on the server")
            continue
        inputs: dict = {}
        values = list(n.get("widgets_values") or [])
        linked = {i["name"]: i.get("link") for i in n.get("inputs", []) if i.get("link") is not None}
        for name, spec in _input_specs(info):
            if _is_widget(spec):
                if not values:
                    problems.append(f"node {n['id']} ({t}): no widget value for {name}")
                    break
                value = values.pop(0)
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("control_after_generate") or (spec[0] == "INT" and name in ("seed", "noise_seed")):
                    if values and values[0] in ("fixed", "increment", "decrement", "randomize"):
                        values.pop(0)
                if opts.get("image_upload") and values and values[0] in ("image", "video", "audio"):
                    values.pop(0)
                if name in linked:
                    continue
                choices = _combo_options(spec)
                if choices is not None and value not in choices:
                    problems.append(f"node {n['id']} ({t}): {name}={value!r} not in {choices[:8]}")
                elif spec[0] in ("INT", "FLOAT"):
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        problems.append(f"node {n['id']} ({t}): {name}={value!r} is not a number")
                    elif ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
                        problems.append(f"node {n['id']} ({t}): {name}={value} outside [{opts.get('min')}, {opts.get('max')}]")
                elif spec[0] == "STRING" and not isinstance(value, str):
                    problems.append(f"node {n['id']} ({t}): {name}={value!r} is not text")
                elif spec[0] == "BOOLEAN" and not isinstance(value, bool):
                    problems.append(f"node {n['id']} ({t}): {name}={value!r} is not a boolean")
                inputs[name] = value
            elif name in linked:
                pass
            elif name in info["input"].get("required", {}):
                problems.append(f"node {n['id']} ({t}): required input {name} is not connected")
        for slot, inp in enumerate(n.get("inputs", [])):
            link_id = inp.get("link")
            if link_id is None:
                continue
            lk = links.get(link_id)
            if lk is None:
                problems.append(f"node {n['id']} ({t}): input {inp['name']} names missing link {link_id}")
                continue
            _, src_id, src_slot, dst_id, dst_slot, ltype = lk[:6]
            src = nodes.get(src_id)
            src_info = object_info.get(src["type"]) if src else None
            if src_info is None:
                problems.append(f"link {link_id}: source node {src_id} unknown")
                continue
            out_type = src_info["output"][src_slot]
            spec = dict(_input_specs(info)).get(inp["name"])
            in_type = spec[0] if spec else inp.get("type")
            in_type = "COMBO" if isinstance(in_type, list) else in_type
            if "*" not in (out_type, in_type) and not (set(str(out_type).split(",")) & set(str(in_type).split(","))):
                problems.append(f"link {link_id}: {src['type']} output {src_slot} ({out_type}) -> {t}.{inp['name']} ({in_type})")
            if ltype not in (out_type, "*") and ltype != in_type:
                problems.append(f"link {link_id}: declared type {ltype} but the output is {out_type}")
            inputs[inp["name"]] = [str(src_id), src_slot]
        prompt[str(n["id"])] = {"class_type": t, "inputs": inputs}
    return problems, prompt


def flux2_vae(seed: int = 0):
    """ComfyUI's VAE object around a random FLUX.2-shaped autoencoder (32 z-channels, 2x2-patchified
    and batch-normed to 128 latent channels at 1/16 resolution), built in memory."""
    setup_comfy()
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    dd = dict(double_z=True, z_channels=32, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
              num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    sd = {}
    for prefix, cls in (("encoder.", Encoder), ("decoder.", Decoder)):
        sd.update({prefix + k: v for k, v in _random_sd(cls(**dd), seed).items()})
    g = torch.Generator().manual_seed(seed)
    sd["quant_conv.weight"] = torch.eye(64).view(64, 64, 1, 1) + 0.01 * torch.randn(64, 64, 1, 1, generator=g)
    sd["quant_conv.bias"] = torch.zeros(64)
    sd["post_quant_conv.weight"] = torch.eye(32).view(32, 32, 1, 1) + 0.01 * torch.randn(32, 32, 1, 1, generator=g)
    sd["post_quant_conv.bias"] = torch.zeros(32)
    sd["bn.running_mean"] = torch.zeros(128)
    sd["bn.running_var"] = torch.ones(128)
    sd["bn.num_batches_tracked"] = torch.tensor(0)
    return comfy.sd.VAE(sd=sd)
