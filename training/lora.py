"""LoRA targets on ComfyUI's FLUX module tree (``model.model.diffusion_model``), injected with peft.

Presets (the paper's Table 2); every preset also adapts the image embedder ``img_in``:

* **A** attention only: double blocks ``{img,txt}_attn.{qkv,proj}``; single blocks only the attention
  part of their fused layers: the q/k/v **rows** of ``linear1`` and the attention-output **columns**
  of ``linear2``.
* **B** attention + FFN (default): double blocks add ``{img,txt}_mlp.{0,2}``; single blocks take the
  whole ``linear1`` (q/k/v + MLP-in) and ``linear2`` (attention-out + MLP-out).
* **C** B + modulation: ``{img,txt}_mod.lin`` and ``modulation.lin`` (or FLUX.2's global modulations).

A single block's ``linear1`` computes q, k, v and the MLP input in one matrix, and ``linear2`` reads the
attention output and the MLP output together. A LoRA on the whole layers would make A and B identical
there, so A restricts them: the adapter still spans the whole layer (peft), but its up-projection rows
outside q/k/v (``linear1``) and its down-projection columns outside the attention output (``linear2``)
are zero and their gradients are masked, so they stay exactly zero and the delta touches only the
attention part. The saved file writes these as ordinary full-layer LoRAs (zeros included), which
every FLUX LoRA loader applies exactly.

Saved keys are kohya's (``lora_unet_<module path with _>.lora_down.weight / .lora_up.weight / .alpha``),
which ComfyUI's stock loader maps for FLUX; scale = alpha / rank in both peft and ComfyUI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

ADAPTER = "default"

_DOUBLE_ATTN = r"double_blocks\.\d+\.(img|txt)_attn\.(qkv|proj)"
_DOUBLE_MLP = r"double_blocks\.\d+\.(img|txt)_mlp\.(0|2)"
_DOUBLE_MOD = r"double_blocks\.\d+\.(img|txt)_mod\.lin"
_SINGLE_FUSED = r"single_blocks\.\d+\.linear[12]"
_SINGLE_MOD = r"single_blocks\.\d+\.modulation\.lin"
_GLOBAL_MOD = r"(double_stream_modulation_(img|txt)|single_stream_modulation)\.lin"  # FLUX.2

PRESET_PATTERNS = {
    "A": ["img_in", _DOUBLE_ATTN, _SINGLE_FUSED],
    "B": ["img_in", _DOUBLE_ATTN, _DOUBLE_MLP, _SINGLE_FUSED],
    "C": ["img_in", _DOUBLE_ATTN, _DOUBLE_MLP, _SINGLE_FUSED, _DOUBLE_MOD, _SINGLE_MOD, _GLOBAL_MOD],
}


def target_regex(preset: str) -> str:
    """The peft ``target_modules`` regex of a preset (full match on module names)."""
    return "^(" + "|".join(PRESET_PATTERNS[preset]) + ")$"


@dataclass(frozen=True)
class Target:
    name: str                      # module path inside diffusion_model
    out_features: int
    in_features: int
    rows: tuple[int, int] | None   # adapted output rows [start, stop) (None: all)
    cols: tuple[int, int] | None   # adapted input columns [start, stop) (None: all)

    @property
    def kohya_key(self) -> str:
        return "lora_unet_" + self.name.replace(".", "_")


def plan(diffusion_model: nn.Module, preset: str) -> list[Target]:
    """Which modules a preset adapts, with the slices of fused layers (see the module docstring)."""
    rx = re.compile(target_regex(preset))
    hidden = int(diffusion_model.hidden_size)
    out: list[Target] = []
    for name, module in diffusion_model.named_modules():
        if not rx.fullmatch(name):
            continue
        module = getattr(module, "base_layer", module)  # already adapted: plan the layer underneath
        if not isinstance(module, nn.Linear):
            continue
        rows = cols = None
        if preset == "A" and name.startswith("single_blocks."):
            if name.endswith("linear1"):
                rows = (0, 3 * hidden)      # q, k, v
            elif name.endswith("linear2"):
                cols = (0, hidden)          # attention output
        out.append(Target(name, module.out_features, module.in_features, rows, cols))
    if not out:
        raise ValueError(f"preset {preset} matched no module: is this a FLUX model?")
    return out


def lora_layers(diffusion_model: nn.Module) -> dict[str, nn.Module]:
    """Injected peft LoRA layers by module path."""
    return {n: m for n, m in diffusion_model.named_modules() if hasattr(m, "lora_A") and ADAPTER in getattr(m, "lora_A", {})}


def _mask(shape, span, dim) -> torch.Tensor:
    m = torch.zeros(shape)
    idx = [slice(None)] * len(shape)
    idx[dim] = slice(*span)
    m[tuple(idx)] = 1
    return m


class _RankDropout(nn.Module):
    """kohya's ``network_dropout``: dropout on the down-projection's output."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def __call__(self, module, args, output):
        return nn.functional.dropout(output, self.p, module.training)


def inject(diffusion_model: nn.Module, preset: str, rank: int, alpha: float, *, dropout: float = 0.0,
           seed: int = 0) -> list[Target]:
    """Put LoRA adapters on ``diffusion_model`` in place; freeze everything else. Returns the plan.

    Adapter weights are fp32 whatever the base dtype (bf16, fp8) and initialised from ``seed`` (peft's
    scheme: A Kaiming-uniform, B zero), so every process of a multi-GPU run starts identical.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = plan(diffusion_model, preset)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_regex(preset),
                        init_lora_weights=True, bias="none")
    inject_adapter_in_model(config, diffusion_model, adapter_name=ADAPTER)
    for p in diffusion_model.parameters():
        p.requires_grad_(False)
    layers = lora_layers(diffusion_model)
    if sorted(layers) != sorted(t.name for t in targets):
        raise RuntimeError(f"peft adapted {sorted(set(layers) ^ {t.name for t in targets})} unexpectedly")
    g = torch.Generator().manual_seed(int(seed))
    for t in targets:
        layer = layers[t.name]
        a, b = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
        a.to(torch.float32)
        b.to(torch.float32)
        with torch.no_grad():
            w = torch.empty(a.weight.shape, dtype=torch.float32)
            bound = 1 / math.sqrt(w.shape[1])  # kaiming_uniform_(a=sqrt(5)), peft's default for lora_A
            w.uniform_(-bound, bound, generator=g)
            if t.cols is not None:
                w *= _mask(w.shape, t.cols, 1)
            a.weight.copy_(w.to(a.weight.device))
            b.weight.zero_()
        a.weight.requires_grad_(True)
        b.weight.requires_grad_(True)
        if t.cols is not None:
            m = _mask(a.weight.shape, t.cols, 1).to(a.weight.device)
            a.weight.register_hook(lambda grad, m=m: grad * m.to(grad.dtype))
        if t.rows is not None:
            m = _mask(b.weight.shape, t.rows, 0).to(b.weight.device)
            b.weight.register_hook(lambda grad, m=m: grad * m.to(grad.dtype))
        if dropout > 0:
            a.register_forward_hook(_RankDropout(dropout))
    return targets


def trainable_parameters(diffusion_model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in diffusion_model.named_parameters() if p.requires_grad]


def effective_parameter_count(diffusion_model: nn.Module, targets: list[Target]) -> int:
    """Adapter entries that can change (masked rows/columns of preset A's fused layers excluded)."""
    layers = lora_layers(diffusion_model)
    total = 0
    for t in targets:
        a = layers[t.name].lora_A[ADAPTER].weight
        b = layers[t.name].lora_B[ADAPTER].weight
        cols = (t.cols[1] - t.cols[0]) if t.cols else a.shape[1]
        rows = (t.rows[1] - t.rows[0]) if t.rows else b.shape[0]
        total += a.shape[0] * cols + rows * b.shape[1]
    return total


def adapter_state(diffusion_model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable adapter tensors by parameter name (what a resumable state stores)."""
    return {n: p.detach() for n, p in diffusion_model.named_parameters() if ".lora_" in n}


def load_adapter_state(diffusion_model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(diffusion_model.named_parameters())
    missing = [n for n in params if ".lora_" in n and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ValueError(f"adapter state does not fit this model (missing {missing[:3]}, unknown {unknown[:3]}); "
                         "was it saved with another preset or rank?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(device=params[n].device, dtype=params[n].dtype))


def scale(rank: int, alpha: float) -> float:
    return float(alpha) / float(rank)


def kohya_state_dict(diffusion_model: nn.Module | None, targets: list[Target], rank: int, alpha: float,
                     dtype: torch.dtype = torch.float32, adapter: dict[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
    """The LoRA in kohya's key format (what ComfyUI's ``LoraLoaderModelOnly`` loads for FLUX).

    ``adapter`` (parameter name -> tensor, e.g. gathered from a sharded model) replaces reading the
    tensors from ``diffusion_model``."""
    if adapter is None:
        adapter = adapter_state(diffusion_model)
    sd: dict[str, torch.Tensor] = {}
    for t in targets:
        down = adapter[f"{t.name}.lora_A.{ADAPTER}.weight"].detach().float().cpu()
        up = adapter[f"{t.name}.lora_B.{ADAPTER}.weight"].detach().float().cpu()
        if t.cols is not None:
            down = down * _mask(down.shape, t.cols, 1)
        if t.rows is not None:
            up = up * _mask(up.shape, t.rows, 0)
        sd[f"{t.kohya_key}.lora_down.weight"] = down.to(dtype).contiguous()
        sd[f"{t.kohya_key}.lora_up.weight"] = up.to(dtype).contiguous()
        sd[f"{t.kohya_key}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return sd


def delta_weights(diffusion_model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    """scale * B @ A per adapted module (fp32): what merging the trained adapter adds to each weight."""
    layers = lora_layers(diffusion_model)
    out = {}
    for t in targets:
        layer = layers[t.name]
        a = layer.lora_A[ADAPTER].weight.detach().float().cpu()
        b = layer.lora_B[ADAPTER].weight.detach().float().cpu()
        out[t.name] = (b @ a) * float(layer.scaling[ADAPTER])
    return out


def base_weight(diffusion_model: nn.Module, name: str) -> torch.Tensor:
    layer = lora_layers(diffusion_model)[name]
    return layer.get_base_layer().weight.detach()


def merged_weights(diffusion_model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    """Base weight + delta per adapted module, fp32 (the trainer's own merge, for checking loaders)."""
    deltas = delta_weights(diffusion_model, targets)
    return {name: base_weight(diffusion_model, name).float().cpu() + d for name, d in deltas.items()}
