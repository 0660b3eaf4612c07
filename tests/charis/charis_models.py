"""Small random models the CHARIS tests build themselves (nothing is downloaded), and synthetic
test pictures.

* ``build_tiny_clip(dir)``: an open_clip ResNet CLIP (RN50 layout, 1 block per stage) saved in
  open_clip's local-dir layout, plus the same weights as a TorchScript archive in OpenAI's key
  layout (what pyiqa loads), rounded to fp16-representable values because pyiqa's loader passes
  them through fp16.
* ``build_tiny_grounding_dino(dir)`` / ``build_tiny_sam(dir)``: transformers GroundingDINO (Swin +
  BERT, with a test-built WordPiece vocabulary) and SAM in their smallest working configs.
* ``build_tiny_qwen2vl(dir, answer)``: a Qwen2-VL with a character-level tokenizer built here, wired
  so greedy decoding writes ``answer`` (its attention and MLP outputs are zeroed, so each next token
  depends only on the current one, and the output head maps each answer token to the next).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_CLIP_CFG = {
    "embed_dim": 64, "quick_gelu": True,
    "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript_state_dict(sd: dict, path: Path) -> Path:
    """A TorchScript archive whose state_dict() is ``sd`` (how OpenAI's CLIP .pt files look to pyiqa)."""
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, _Holder())
            mod = getattr(mod, p)
        if "running_" in leaf or "num_batches" in leaf:
            mod.register_buffer(leaf, value.clone())
        else:
            mod.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False))
    torch.jit.script(root).save(str(path))
    return path


def build_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Returns (open_clip local-dir folder, TorchScript file for pyiqa)."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v
            continue
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif k == "logit_scale":
            v = torch.full_like(v, math.log(100.0))
        elif "bn" in k and k.endswith("weight") or k.endswith("downsample.1.weight"):
            v = 1.0 + 0.2 * torch.randn(v.shape, generator=g)  # open_clip zero-inits bn3: undo for a lively model
        else:
            v = v + 0.02 * torch.randn(v.shape, generator=g)
        sd[k] = v.half().float()
    local = folder / "tiny-rn-clip"
    local.mkdir(parents=True, exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(local / "open_clip_model.safetensors"))
    ts = save_torchscript_state_dict(sd, folder / "tiny-rn-clip-openai.pt")
    return local, ts


def build_tiny_grounding_dino(folder: Path, words=("hair", "jacket", "eyes", "shoes", "face", "skin")) -> Path:
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                   image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=20, max_text_len=32, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2)
    model = GroundingDinoForObjectDetection(cfg).eval()
    proc = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tok)
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return folder


def build_tiny_sam(folder: Path) -> Path:
    from transformers import (SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)

    folder = Path(folder)
    torch.manual_seed(0)
    cfg = SamConfig(
        vision_config=SamVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_dim=64,
                                      image_size=64, patch_size=16, output_channels=16, window_size=2,
                                      global_attn_indexes=[0], num_pos_feats=8),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 mlp_dim=32, iou_head_hidden_dim=16))
    SamModel(cfg).eval().save_pretrained(str(folder))
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
                 ).save_pretrained(str(folder))
    return folder


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_qwen2vl(folder: Path, answer: str = '{"score": 3}') -> Path:
    """A Qwen2-VL whose greedy continuation of any chat is ``answer`` followed by <|im_end|>.

    Tokens: the specials, then one token per multi-character piece of ``answer`` (so no piece repeats
    and the chain stays a function of the current token), then single printable characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    folder = Path(folder)
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    pieces = _pieces(answer)
    vocab = {t: i for i, t in enumerate(QWEN_SPECIALS + chars)}
    chain_tokens = []
    for p in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
        chain_tokens.append(vocab[p])
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(QWEN_SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    proc = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4),
                            tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    V = len(vocab)
    eos = vocab["<|im_end|>"]
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                                 "rope_theta": 10000.0},
                         bos_token_id=0, eos_token_id=eos, pad_token_id=0, max_position_embeddings=4096),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        lm = model.language_model if hasattr(model, "language_model") else model.model.language_model
        for layer in lm.layers:  # each position now sees only its own token
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = lm.embed_tokens.weight
        q, _ = torch.linalg.qr(torch.randn(32, 32))
        emb.normal_(0, 0.02)
        head = model.lm_head.weight
        head.zero_()
        # '\n' (the last prompt token, after "assistant") -> piece 0 -> piece 1 -> ... -> <|im_end|>
        chain = [vocab["\n"], *chain_tokens, eos]
        for k, (src, dst) in enumerate(zip(chain[:-1], chain[1:])):
            emb[src] = q[k % 32]
            head[dst] += 20.0 * q[k % 32]
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = 0
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return folder


def _pieces(answer: str) -> list[str]:
    """Split ``answer`` into multi-character pieces, none repeated, none a single character."""
    pieces, i = [], 0
    while i < len(answer):
        for size in (3, 4, 5, 6, 7, 8, len(answer) - i):
            p = answer[i:i + size]
            if len(p) >= 2 and p not in pieces:
                break
        pieces.append(p)
        i += len(p)
    if len(pieces[-1]) == 1 or len(set(pieces)) != len(pieces):
        return [answer]
    return pieces


# --------------------------------------------------------------------------------------------------
# Synthetic pictures (in the package: the benchmark draws them too)

from instruct_identity.charis.testing import character  # noqa: E402,F401
