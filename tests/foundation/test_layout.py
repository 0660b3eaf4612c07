"""The latent layout (torch only): concat / split / mask / batch matching / masked loss / sizes."""

import pytest
import torch

from instruct_identity.core import layout
from instruct_identity.core.errors import InputError


def test_concat_puts_target_left_reference_right_and_split_inverts():
    tgt = torch.randn(2, 16, 4, 5)
    ref = torch.randn(2, 16, 4, 5)
    grid = layout.concat(tgt, ref)
    assert grid.shape == (2, 16, 4, 10)
    assert torch.equal(grid[..., :5], tgt) and torch.equal(grid[..., 5:], ref)
    t, r = layout.split(grid)
    assert torch.equal(t, tgt) and torch.equal(r, ref)


def test_concat_broadcasts_one_reference_and_rejects_shape_mismatch():
    grid = layout.concat(torch.zeros(3, 4, 2, 2), torch.ones(1, 4, 2, 2))
    assert grid.shape == (3, 4, 2, 4)
    assert torch.equal(grid[..., 2:], torch.ones(3, 4, 2, 2))
    with pytest.raises(InputError, match="reference"):
        layout.concat(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))


def test_mask_is_one_on_target_columns_only():
    lay = layout.Layout(3, 4)
    mu = layout.target_mask(lay)
    assert mu.shape == (1, 1, 3, 8)
    assert mu[..., :4].eq(1).all() and mu[..., 4:].eq(0).all()


def test_token_count_counts_the_whole_grid():
    # 64x64 latent per half, patch 2 -> 32x64 tokens
    assert layout.Layout(64, 64).token_count(2) == 32 * 64
    assert layout.Layout(32, 32).token_count(1) == 32 * 64


def test_match_batch_tiles_cfg_copies_in_order():
    ref = torch.arange(2.0).view(2, 1, 1, 1)
    out = layout.match_batch(ref, 4)  # [cond b0, cond b1, uncond b0, uncond b1]
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(InputError, match="reference"):
        layout.match_batch(torch.zeros(2, 1, 1, 1), 3)


def test_with_reference_replaces_only_the_right_half():
    grid = torch.randn(4, 3, 2, 6)
    ref = torch.randn(2, 3, 2, 3)
    out = layout.with_reference(grid, ref)
    assert torch.equal(out[..., :3], grid[..., :3])
    assert torch.equal(out[:2, ..., 3:], ref) and torch.equal(out[2:, ..., 3:], ref)
    assert not torch.equal(grid[..., 3:], out[..., 3:])  # input untouched (copy)
    with pytest.raises(InputError, match="latent"):
        layout.with_reference(torch.randn(1, 3, 2, 8), ref)


def test_masked_mse_is_normalised_by_the_masked_area():
    pred = torch.zeros(1, 2, 2, 4)
    target = torch.zeros(1, 2, 2, 4)
    target[..., :2] = 2.0  # error 4 on every target element
    target[..., 2:] = 10.0  # huge error on the reference half must not count
    mu = layout.target_mask(layout.Layout(2, 2))
    assert layout.masked_mse(pred, target, mu).item() == pytest.approx(4.0)
    # kohya-style plain mean of mask*err would give half of it
    assert ((pred - target) ** 2 * mu).mean().item() == pytest.approx(2.0)
    assert layout.masked_mse(pred, target, None).item() == pytest.approx((4 + 100) / 2)


def test_snap_rounds_and_refuses_unusable_sizes():
    assert layout.snap(500, 16, "width") == 496
    assert layout.snap(505, 16, "width") == 512
    assert layout.snap(3, 16, "width") == 16
    with pytest.raises(InputError, match="^width: 0 px"):
        layout.snap(0, 16, "width")
    with pytest.raises(InputError, match="height.*larger"):
        layout.snap(100000, 16, "height")
