"""Token features of vision transformers: the ``tokens`` decoder and ``torchvision:vit_b_16:…``
(offline: random weights, a 32-px crop)."""
import functools

import pytest
import torch
import torch.nn.functional as F

from preimage.decoders import TokenDecoder, build_decoder, token_grid
from preimage.features import create, lookup
from preimage.features.torchvision_net import channels_last

W = 0.125




@functools.lru_cache(maxsize=None)
def vit_layer1():
    return create("torchvision:vit_b_16:encoder.layers.encoder_layer_1", weights="random", seed=0, crop=32)


@pytest.mark.parametrize("shape, expected", [((197, 768), (1, 14, 768)), ((5, 768), (1, 2, 768)),
                                             ((16, 64), (0, 4, 64)), ((2, 8), (1, 1, 8))])
def test_token_grid(shape, expected):
    assert token_grid(shape) == expected


@pytest.mark.parametrize("shape", [(7, 8), (3, 4, 4), (0, 8)])
def test_token_grid_refuses_what_is_no_square_grid(shape):
    with pytest.raises(ValueError):
        token_grid(shape)


def test_tokens_decoder_shapes():
    d = build_decoder("tokens", (197, 768), 224, width=W)
    assert isinstance(d, TokenDecoder) and d.output_size == 224  # 14·2^4
    assert d(torch.randn(2, 197, 768)).shape == (2, 3, 224, 224)
    rows = d.describe().splitlines()
    assert rows[1].split()[:2] == ["grid", "input"] and rows[2].split()[0] == "cls_fc"
    assert "14×14×800" in rows[3] and rows[4].split()[:2] == ["conv1", "broadcast"]
    small = build_decoder("tokens", (5, 768), 32, width=W)  # ViT-B/16 at 32 px: 2×2 patches
    assert small.output_size == 32 and small(torch.randn(1, 5, 768)).shape == (1, 3, 32, 32)
    plain = build_decoder("tokens", (16, 64), 64, width=W)  # no class token: the grid alone
    assert not hasattr(plain, "cls_fc") and plain(torch.randn(1, 16, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="expects"):
        small(torch.randn(1, 4, 768))


def test_tokens_decoder_reads_patches_in_row_major_order():
    # a decoder whose class-token input is zeroed sees the patch tokens as a map: token 1 + (r·g + c) at (r, c)
    d = build_decoder("tokens", (5, 3), 8, width=W)
    x = torch.zeros(1, 5, 3)
    x[0, 1 + 1 * 2 + 0] = torch.tensor([1.0, 2.0, 3.0])  # row 1, column 0
    grid = d._prepare(x)[:, :3]
    assert grid[0, :, 1, 0].tolist() == [1.0, 2.0, 3.0] and grid[0].abs().sum() == 6
    # the class token reaches every cell through cls_fc
    x[0, 0] = 1.0
    extra = d._prepare(x)[:, 3:]
    assert torch.equal(extra[..., :1, :1].expand_as(extra), extra)


def test_tokens_decoder_learns_a_batch():
    torch.manual_seed(0)
    d = build_decoder("tokens", (5, 32), 16, width=W)
    f, img = torch.randn(4, 5, 32), torch.rand(4, 3, 16, 16)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(d(f), img)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_vit_encoder_layer_gives_tokens():
    r = vit_layer1()
    assert r.output_shape(32, 32) == (5, 768)  # class token + 2×2 patches of 16 px
    assert lookup(r.name).decoder_kind((5, 768)) == "tokens"
    assert r.identity()["crop"] == "32" and r.identity()["weights"] == "random:0"
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    out = r.compute(x)
    assert out.shape == (2, 5, 768)
    # the same as running the (resized) network and taking encoder_layer_1's output
    model = r.loaded.model
    got = {}
    hook = model.encoder.layers.encoder_layer_1.register_forward_hook(lambda m, i, o: got.__setitem__("o", o))
    with torch.no_grad():
        model(r.preprocess(x))
    hook.remove()
    torch.testing.assert_close(out, got["o"], rtol=1e-4, atol=1e-4)


def test_vit_runs_only_up_to_the_node():
    # torch._assert nodes would otherwise keep all twelve blocks in the pruned graph
    r = vit_layer1()
    blocks = {name.split(".")[2] for name, _ in r.net.named_parameters() if name.startswith("encoder.layers.")}
    assert blocks == {"encoder_layer_0", "encoder_layer_1"}


def test_vit_crop_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        create("torchvision:vit_b_16:encoder.layers.encoder_layer_0", weights="random", crop=40)


def test_swin_maps_are_channels_first():
    r = create("torchvision:swin_t:features.1", weights="random", seed=0, crop=64)
    assert r.channels_last and r.output_shape(64, 64) == (96, 16, 16)
    assert r.decoder_kind((96, 16, 16)) == "conv"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = {}
    hook = r.loaded.model.features[1].register_forward_hook(lambda m, i, o: got.__setitem__("o", o))
    with torch.no_grad():
        r.loaded.model(r.preprocess(x))
    hook.remove()
    torch.testing.assert_close(r.compute(x), got["o"].permute(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    assert not channels_last(r.loaded.model, "avgpool") and channels_last(r.loaded.model, "norm")
