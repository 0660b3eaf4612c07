"""Batch plans (characters x poses), sheet files, and finding the borders to out-paint."""

import json

import pytest
import torch

from instruct_identity.core.errors import InputError
from instruct_identity.curation import outpaint as O
from instruct_identity.curation import sheets as S


def test_characters_from_lines_csv_and_json():
    lines = S.parse_characters("alice: a girl, red hair, green coat\n\na small blue robot with antennas\n")
    assert [(c.name, c.description) for c in lines] == [("alice", "a girl, red hair, green coat"),
                                                        ("a_small_blue", "a small blue robot with antennas")]
    csv_text = 'name,description,poses\nalice,"a girl, red hair","front; back"\nbob,a robot,\n'
    chars = S.parse_characters(csv_text)
    assert [(c.name, c.description, c.poses) for c in chars] == [("alice", "a girl, red hair", ("front", "back")), ("bob", "a robot", ())]
    js = json.dumps({"characters": [{"name": "alice", "description": "a girl", "poses": ["sitting"]}, "a robot"]})
    chars = S.parse_characters(js)
    assert chars[0].poses == ("sitting",) and chars[1].description == "a robot"
    dup = S.parse_characters("kim: one\nkim: two")
    assert [c.name for c in dup] == ["kim", "kim_2"]
    for bad in ("", "[1, 2]", "{", "name,description\nx,\n"):
        with pytest.raises(InputError):
            S.parse_characters(bad)
    assert S.parse_poses('["a", " b "]') == ["a", "b"] and S.parse_poses("a\n\n b\n") == ["a", "b"]


def test_plan_sheets_seeds_and_names():
    plans = S.plan_sheets("alice: a girl\nbob/../x: a robot", "front\nback", seed=7, base_template="sheet of {description}",
                          cell_template="{name}: {description}, {pose}", folder="sheets/out")
    assert [p.name for p in plans] == ["alice", "bob/../x"]
    assert plans[0].base_prompt == "sheet of a girl"
    assert plans[0].cell_prompts == ("alice: a girl, front", "alice: a girl, back") and plans[0].captions == ("front", "back")
    assert plans[0].filename_prefix == "sheets/out/alice"
    assert plans[1].filename_prefix == "sheets/out/bob_.._x" and ".." not in plans[1].filename_prefix.split("/")
    # seeds depend on the base seed and the name only: reordering or adding characters changes nothing
    again = S.plan_sheets("carol: c\nbob/../x: a robot\nalice: a girl", "front", seed=7)
    assert {p.name: p.seed for p in again}["alice"] == plans[0].seed
    assert S.plan_sheets("alice: a girl", "front", seed=8)[0].seed != plans[0].seed
    assert plans[0].seed != plans[1].seed
    with pytest.raises(InputError):
        S.plan_sheets("alice: a girl", "a\nb\nc", max_cells=2)
    with pytest.raises(InputError):
        S.plan_sheets("alice: a girl", "")


def _picture(h=64, w=96, box=(10, 20, 30, 40), bg=(1.0, 1.0, 1.0)):
    img = torch.ones(h, w, 3) * torch.tensor(bg)
    y0, x0, y1, x1 = box
    img[y0:y1, x0:x1] = torch.tensor([0.8, 0.1, 0.2])
    return img


def test_outpaint_pads_only_cut_off_sides():
    inside = _picture()
    report, mask = O.border_padding(inside)
    assert report.sides == [] and mask[15, 30] == 1 and mask[0, 0] == 0
    cut = _picture(box=(10, 0, 64, 40))                          # touches left and bottom
    report, _ = O.border_padding(cut, pad_fraction=0.25, multiple=16)
    assert report.sides == ["left", "bottom"]
    assert report.padding == {"left": 32, "top": 0, "right": 0, "bottom": 16}
    assert "left" in report.text()
    grey = _picture(box=(0, 50, 30, 96), bg=(0.5, 0.5, 0.5))    # other background colour; top and right
    report, _ = O.border_padding(grey)
    assert report.sides == ["top", "right"] and abs(report.background[0] - 0.5) < 0.01
    speck = _picture(box=(0, 40, 1, 41))                         # a single noisy pixel is not a subject
    assert O.border_padding(speck)[0].sides == []
    assert O.union_padding([O.border_padding(cut)[0], O.border_padding(grey)[0]]) == {"left": 32, "top": 16, "right": 32, "bottom": 16}


def test_sidecar_and_png_chunk(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from instruct_identity.core.regions import grid_layout

    info = S.SheetInfo(grid_layout(64, 32, 1, 2, 0, ["a", "b"], captions=["ca", "cb"]), character="zoe", seed=3)
    p = tmp_path / "zoe_00001_.png"
    Image.new("RGB", (64, 32), "white").save(p)
    S.write_sidecar(p, info)
    back = S.read_sheet_info(p)
    assert back.character == "zoe" and back.layout.captions == ["ca", "cb"] and back.image == p.name
    q = tmp_path / "chunk.png"
    meta = PngInfo()
    meta.add_text(S.PNG_KEY, json.dumps(info.to_dict()))
    Image.new("RGB", (64, 32), "white").save(q, pnginfo=meta)
    assert S.read_sheet_info(q).layout.prompts == ["a", "b"]
    assert S.read_sheet_info(tmp_path / "missing.png") is None
    assert S.find_sheets(tmp_path) == [q, p]
