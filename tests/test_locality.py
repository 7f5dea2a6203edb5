"""Reconstructions from groups of neurons (preimage.locality): the masks of M&V's locality experiment."""
import pytest
import torch

from preimage.locality import _frame, _masks, channel_mask, window_bounds, window_mask


@pytest.mark.parametrize("side,size,expected", [
    (13, 5, (4, 9)),   # M&V: (0:4) + ceil((13-5+1)/2) = 5..9 (1-based) -> 4..8
    (13, 3, (5, 8)),
    (8, 3, (2, 5)),    # ceil(6/2) = 3 (1-based) -> cells 2, 3, 4
    (8, 2, (3, 5)),
    (6, 6, (0, 6)),
    (4, 9, (0, 4)),    # capped at the map
    (1, 1, (0, 1)),
])
def test_window_bounds_follow_mv_centring(side, size, expected):
    assert window_bounds(side, size) == expected


def test_window_mask_keeps_the_centre_of_every_channel():
    mask = window_mask((5, 8, 6), 3)
    assert mask.shape == (1, 5, 8, 6) and mask.sum().item() == 5 * 3 * 3
    assert torch.equal(mask[0, :, 2:5, 1:4], torch.ones(5, 3, 3))
    assert torch.equal(mask[0, 0], mask[0, 4])
    with pytest.raises(ValueError):
        window_mask((10,), 3)


def test_channel_mask_keeps_the_first_channels_everywhere():
    mask = channel_mask((10, 4, 4), 0.5)
    assert mask[0, :5].min() == 1 and mask[0, 5:].max() == 0
    assert channel_mask((7, 2, 2), 0.5)[0, :, 0, 0].tolist() == [1, 1, 1, 1, 0, 0, 0]  # ceil(3.5) = 4
    assert channel_mask((1000,), 0.01).sum().item() == 10  # vectors: the first units
    with pytest.raises(ValueError):
        channel_mask((4, 2, 2), 0.0)


def test_variants_depend_on_the_feature_shape():
    assert list(_masks((16, 8, 8), 3, 0.5)) == ["all", "window", "channels"]
    assert list(_masks((1000,), 3, 0.5)) == ["all", "channels"]  # no spatial extent: no window
    assert list(_masks((256, 1, 1), 3, 0.5)) == ["all", "channels"]
    assert _masks((16, 8, 8), 3, 0.25)["channels"][1] == "first 4 of 16 channels"
    assert _masks((16, 8, 8), 3, 0.5)["window"][1] == "centre 3×3 of 8×8 cells"


def test_the_window_footprint_is_framed():
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8).numpy()
    framed = _frame(images, (4, 12, 4, 12))
    assert framed[:, 0, 4, 4:12].min() == 255 and framed[:, 0, 11, 4:12].min() == 255
    assert framed[:, 0, 6, 6].max() == 0 and framed[:, 0, 0, 0].max() == 0
    assert images.max() == 0  # a copy
