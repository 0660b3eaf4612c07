"""The character-sheet nodes called in-process (schemas valid, outputs as documented)."""

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("comfy")


def _out(node_output):
    return node_output.result if hasattr(node_output, "result") else node_output


def test_schemas_are_valid_and_prefixed():
    from instruct_identity.nodes import curation, regional, sheets

    for module in (regional, sheets, curation):
        for node in module.NODES:
            schema = node.GET_SCHEMA()
            assert schema.node_id.startswith("InstructIdentity")
            assert schema.category.startswith("Instruct Identity")
            assert all(o.display_name for o in schema.outputs)


def test_layout_nodes():
    from instruct_identity.core.regions import RegionLayout
    from instruct_identity.nodes.regional import GridLayout, LayoutFromColorMask, LayoutFromJSON, LayoutFromMasks

    layout, text, masks, preview = _out(GridLayout.execute(256, 128, 1, 2, 16, "front\nback", "f\nb", "white"))
    assert layout.prompts == ["front", "back"] and layout.captions == ["f", "b"] and layout.background_prompt == "white"
    assert json.loads(text)["grid"] == {"rows": 1, "cols": 2, "gutter": 16}
    assert masks.shape == (2, 128, 256) and preview.shape == (1, 128, 256, 3)
    again = _out(LayoutFromJSON.execute(text))[0]
    assert again.to_dict() == layout.to_dict()

    m = torch.zeros(1, 64, 64)
    m[0, :, :32] = 1
    first = _out(LayoutFromMasks.execute(m, "left", 0.5))[0]
    m2 = torch.zeros(1, 32, 32)
    m2[0, :, 16:] = 1                                      # other size: resized to the layout's canvas
    both = _out(LayoutFromMasks.execute(m2, "right", 0.5, add_to=first))[0]
    assert isinstance(both, RegionLayout) and both.prompts == ["left", "right"]
    assert both.masks()[1, :, 32:].all() and not both.masks()[1, :, :32].any()

    colors = _out(GridLayout.execute(128, 64, 1, 2, 0, "a\nb"))[3]
    lay = _out(LayoutFromColorMask.execute(colors, "one\ntwo", "#000000", 32))[0]
    assert lay.prompts == ["one", "two"] and lay.boxes == [(0, 0, 64, 64), (64, 0, 64, 64)]


def test_batch_split_and_outpaint_nodes():
    from instruct_identity.core.regions import grid_layout
    from instruct_identity.nodes.sheets import CharacterSheetBatch, OutpaintBorders, SplitSheet

    names, base, cells, caps, seeds, prefixes, count = _out(CharacterSheetBatch.execute(
        "ann: a cat\nbo: a dog", "sit\nrun", "auto", 3, "sheet of {description}", "{description} {pose}", "sheets"))
    assert names == ["ann", "bo"] and base == ["sheet of a cat", "sheet of a dog"]
    assert cells[0] == "a cat sit\na cat run" and caps[1] == "sit\nrun" and count == 2
    assert prefixes == ["sheets/ann", "sheets/bo"] and len(set(seeds)) == 2

    layout = grid_layout(64, 32, 1, 2, 0, ["a", "b"])
    image = torch.rand(2, 32, 64, 3)
    cells, captions = _out(SplitSheet.execute(image, layout))
    assert len(cells) == 4 and cells[0].shape == (1, 32, 32, 3) and captions == ["a", "b", "a", "b"]
    assert torch.equal(cells[3][0], image[1, :, 32:])

    pic = torch.ones(1, 64, 64, 3)
    pic[0, 20:64, 10:30] = 0.2                              # touches the bottom
    left, top, right, bottom, mask, report = _out(OutpaintBorders.execute(pic, 0.08, 2, 0.02, 0.25, 16))
    assert (left, top, right, bottom) == (0, 0, 0, 16) and mask.shape == (1, 64, 64) and "bottom" in report


def test_save_sheet_node(tmp_path, monkeypatch):
    import folder_paths

    from instruct_identity.core.regions import grid_layout
    from instruct_identity.curation.sheets import read_sheet_info
    from instruct_identity.nodes.sheets import save_sheets

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    layout = grid_layout(64, 32, 1, 2, 0, ["a", "b"], captions=["ca", "cb"])
    saved = save_sheets(torch.rand(1, 32, 64, 3), layout, "sheets/zoe", "zoe", "base", 5)
    assert saved == [("sheets", "zoe_00001_.png")]
    info = read_sheet_info(tmp_path / "sheets" / "zoe_00001_.png")
    assert info.character == "zoe" and info.seed == 5 and info.layout.captions == ["ca", "cb"]
    assert save_sheets(torch.rand(1, 32, 64, 3), layout, "sheets/zoe", "zoe")[0][1] == "zoe_00002_.png"
