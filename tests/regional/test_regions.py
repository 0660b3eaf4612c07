"""Region layouts and the joint-attention mask (pure torch, no ComfyUI)."""

import json

import pytest
import torch

from instruct_identity.core import regions as R
from instruct_identity.core.errors import InputError


def _blocks(mask, text: R.TextLayout, n_img):
    """Slices of the mask: text groups (base, regions, background) then image."""
    spans = text.spans()
    return spans, slice(text.total, text.total + n_img)


@pytest.mark.parametrize("mode", ["blocked", "global"])
def test_mask_block_structure(mode):
    # 2x2 token grid, 3 regions: region 0 = left column, region 1 = top right, bottom right uncovered
    labels = torch.tensor([[0, 1], [0, -1]])
    text = R.TextLayout(base=3, regions=(2, 4, 1), background=2)
    m = R.joint_attention_mask(labels, text, mode)
    L = text.total + 4
    assert m.shape == (L, L) and m.dtype == torch.bool
    spans = text.spans()               # base, r0, r1, r2, background
    img = text.total + torch.arange(4)  # flattened row-major: (0,0)=r0, (0,1)=r1, (1,0)=r0, (1,1)=bg
    tok_group = {0: 1, 1: 2, 2: 1, 3: 4}   # image token -> text group index in spans (1..3 regions, 4 background)

    # text <-> text: same group only
    for a, sa in enumerate(spans):
        for b, sb in enumerate(spans):
            assert bool(m[sa, sb].all()) == (a == b) and bool(m[sa, sb].any()) == (a == b), (a, b)
    # image -> text: base always, own region's (or background's) text, nothing else
    for t in range(4):
        row = m[img[t]]
        assert row[spans[0]].all()
        for g in range(1, 5):
            assert bool(row[spans[g]].all()) == (g == tok_group[t]) and bool(row[spans[g]].any()) == (g == tok_group[t]), (t, g)
    # text -> image: region text sees its own region's pixels only; base text per mode
    for g in range(1, 5):
        for t in range(4):
            assert bool(m[spans[g], img[t]].all()) == (g == tok_group[t])
            assert bool(m[spans[g], img[t]].any()) == (g == tok_group[t])
    assert bool(m[spans[0], text.total:].all()) == (mode == "global")
    assert bool(m[spans[0], text.total:].any()) == (mode == "global")
    # image <-> image
    ii = m[text.total:, text.total:]
    if mode == "global":
        assert ii.all()
    else:
        expected = torch.tensor([[tok_group[a] == tok_group[b] for b in range(4)] for a in range(4)])
        assert torch.equal(ii, expected)
    # region 2 covers no token: its text sees only itself
    assert not m[spans[3], text.total:].any() and m[spans[3], spans[3]].all()


def test_mask_extra_tokens_and_region_count():
    labels = torch.tensor([0, 1])
    text = R.TextLayout(1, (1, 1))
    m = R.joint_attention_mask(labels, text, "blocked", extra_tokens=3)
    assert m.shape == (8, 8)
    assert m[-3:].all() and m[:, -3:].all()
    with pytest.raises(InputError):
        R.joint_attention_mask(torch.tensor([0, 2]), text)
    with pytest.raises(InputError):
        R.joint_attention_mask(labels, text, "sideways")


def test_additive_and_reference_attention():
    torch.manual_seed(0)
    allowed = torch.rand(6, 6) > 0.4
    allowed |= torch.eye(6, dtype=torch.bool)
    add = R.additive_mask(allowed, torch.float32)
    assert (add[allowed] == 0).all() and (add[~allowed] < -1e20).all()
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    ref = R.masked_attention(q, k, v, allowed)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=add)
    assert torch.allclose(ref, sdpa, atol=1e-5)
    assert R.blocked_value(torch.float16) > torch.finfo(torch.float16).min


@pytest.mark.parametrize("vae,patch,expect", [(8, 2, (4, 8)), (16, 1, (4, 8)), (8, 1, (8, 16))])
def test_token_grid_any_patch_size(vae, patch, expect):
    assert R.token_grid(64, 128, vae, patch) == expect
    lay = R.grid_layout(128, 64, 1, 2, 0, ["a", "b"])
    labels = lay.labels(*expect)
    assert labels.shape == expect
    half = expect[1] // 2
    assert (labels[:, :half] == 0).all() and (labels[:, half:] == 1).all()


def test_grid_layout_cells_masks_and_prompts():
    lay = R.grid_layout(1000, 500, 2, 3, 20, "a\nb\nc\nd")
    assert len(lay) == 6 and lay.grid == (2, 3, 20)
    cw, ch = (1000 - 40) // 3, (500 - 20) // 2
    assert lay.boxes[0] == (0, 0, cw, ch) and lay.boxes[4] == (cw + 20, ch + 20, cw, ch)
    assert [r.cell for r in lay.regions][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert lay.prompts == ["a", "b", "c", "d", "", ""]
    masks = lay.masks()
    assert masks.shape == (6, 500, 1000)
    assert (masks.sum(0) <= 1).all()                               # disjoint
    assert not masks[:, :, cw:cw + 20].any()                        # gutter is background
    labels = lay.labels()
    assert (labels[:, cw:cw + 20] == R.BACKGROUND).all()
    with pytest.raises(InputError):
        R.grid_layout(100, 100, 1, 2, 0, "a\nb\nc")
    with pytest.raises(InputError):
        R.grid_layout(100, 100, 1, 2, 200, "a")


def test_overlaps_go_to_the_earlier_region():
    m = torch.zeros(2, 8, 8)
    m[0, :, :5] = 1
    m[1, :, 3:] = 1
    lay = R.layout_from_masks(m, ["left", "right"])
    masks = lay.masks()
    assert masks[0, :, :5].all() and not masks[1, :, :5].any() and masks[1, :, 5:].all()
    assert lay.overlap_pixels() == 16


def test_json_round_trip_and_editor_form():
    lay = R.grid_layout(256, 128, 1, 2, 16, ["x", "y"], captions=["cx", "cy"], background_prompt="white")
    again = R.RegionLayout.from_json(lay.to_json())
    assert again.to_dict() == lay.to_dict()
    assert again.captions == ["cx", "cy"] and again.background_prompt == "white"
    # the form a frontend region editor writes: a bare list of boxes + prompts
    editor = json.dumps([{"x": 0, "y": 0, "w": 64, "h": 64, "prompt": "p"}, {"x": 64, "y": 0, "w": 64, "h": 64, "prompt": "q"}])
    lay2 = R.RegionLayout.from_json(editor)
    assert (lay2.width, lay2.height) == (128, 64) and lay2.prompts == ["p", "q"]
    # masks survive as run-length encoding
    m = torch.zeros(1, 16, 16)
    m[0, 3:9, 2:7] = 1
    lay3 = R.layout_from_masks(m, ["blob"])
    assert torch.equal(R.RegionLayout.from_json(lay3.to_json()).masks(), lay3.masks())
    for bad in ("{", '{"regions": 3}', '[{"x": 0, "prompt": "p"}]', '[{"x":0,"y":0,"w":0,"h":5}]'):
        with pytest.raises(InputError):
            R.RegionLayout.from_json(bad)


def test_color_mask_layout():
    img = torch.zeros(1, 32, 64, 3)
    img[0, :, :30] = torch.tensor([1.0, 0.0, 0.0])       # red left
    img[0, :, 34:] = torch.tensor([0.0, 0.0, 1.0])       # blue right
    img[0, :, 30:32] = torch.tensor([0.5, 0.0, 0.02])    # anti-aliased seam, 2 px
    img[0, :, 32:34] = torch.tensor([0.1, 0.0, 0.9])     # (second half near blue)
    lay = R.layout_from_color_mask(img, "first\nsecond")
    assert lay.prompts == ["first", "second"] and [r.color for r in lay.regions] == ["#ff0000", "#0000ff"]
    lay2 = R.layout_from_color_mask(img, "#0000ff: sea\n#f00: fire")
    assert lay2.prompts == ["fire", "sea"]
    assert lay2.masks()[0, :, :30].all() and lay2.masks()[1, :, 34:].all()
    with pytest.raises(InputError):
        R.layout_from_color_mask(img, "only one")
    with pytest.raises(InputError):
        R.layout_from_color_mask(img, "#00ff00: grass\nx")


def test_grid_split_round_trip():
    lay = R.grid_layout(96, 64, 2, 3, 4, "a\nb\nc\nd\ne\nf")
    sheet = torch.rand(64, 96, 3)
    cells = R.crop_cells(sheet, lay)
    assert len(cells) == 6 and all(c.shape == cells[0].shape for c in cells)
    back = R.assemble_cells(cells, lay, fill=0.0)
    covered = lay.masks().any(0)
    assert torch.equal(back[covered], sheet[covered])
    assert (back[~covered] == 0).all()
    # a sheet saved at twice the size splits into the same cells, scaled
    big = sheet.repeat_interleave(2, 0).repeat_interleave(2, 1)
    big_cells = R.crop_cells(big, lay)
    assert big_cells[4].shape[:2] == (cells[4].shape[0] * 2, cells[4].shape[1] * 2)
    assert torch.equal(big_cells[4][::2, ::2], cells[4])


def test_preview_colours_each_region():
    lay = R.grid_layout(64, 32, 1, 2, 0, "a\nb")
    img = R.preview(lay)
    assert img.shape == (1, 32, 64, 3)
    assert not torch.equal(img[0, 0, 0], img[0, 0, 63])


def test_cell_local_ids_move_each_region_to_the_grid_origin():
    # 2 x 4 token grid: region 0 the left two columns, region 1 the right two, the last column of row 1 background
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1]])
    yy, xx = torch.meshgrid(torch.arange(2.0), torch.arange(4.0), indexing="ij")
    grid = torch.stack([torch.zeros(2, 4), yy + 5, xx + 7], -1).reshape(1, 8, 3)   # an offset canvas (rope shift)
    extra = torch.tensor([[[1.0, 9.0, 9.0]]])                                       # a reference latent token
    ids = torch.cat([grid, extra], 1).expand(2, -1, -1)
    out = R.cell_local_ids(ids, labels)
    want_x = torch.tensor([7, 8, 7, 8, 7, 8, 7, 10.0])       # region 1 starts at column 7; background keeps 10
    assert torch.equal(out[0, :8, 2], want_x) and torch.equal(out[1, :8, 2], want_x)
    assert torch.equal(out[0, :8, 1], grid[0, :, 1])           # one row of cells: rows unchanged
    assert torch.equal(out[:, 8:], ids[:, 8:]) and torch.equal(out[:, :8, 0], ids[:, :8, 0])
    assert torch.equal(ids[0, :8], grid[0])                    # the input is not changed
    with pytest.raises(InputError, match="layout"):
        R.cell_local_ids(ids[:, :5], labels)
