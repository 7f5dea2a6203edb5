"""``timm:<model>:<node>``: timm's test models with random weights at 32 px (offline, no download),
local weights files (weights-only loading, hostile files refused), the offline error, the config
check, and the preprocessing documented in docs/timm.md against timm's pretrained configs."""
import functools
import math
import pickle
import re
from pathlib import Path

import pytest
import torch

from preimage.atomic_files import DamagedFile, file_sha256
from preimage.torch_files import UnsafeFile
from preimage.config import ConfigError, validate_config
from preimage.features import NodeSet, create
from preimage.features import timm_net
from preimage.weights import WeightsUnavailableError

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
VIT, CNN = "timm:test_vit:blocks.1", "timm:test_resnet:layer2"



@pytest.fixture(autouse=True)
def no_hub(monkeypatch, tmp_path):
    """No test reaches the Hugging Face hub: offline mode and an empty cache of its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm_net, "_hub_cache", lambda: str(tmp_path / "hf-cache"))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


@functools.lru_cache(maxsize=None)
def vit(seed=0):
    return create(VIT, weights="random", seed=seed, crop=32)


def images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vit_node_gives_class_token_and_patch_grid():
    rep = vit()
    assert rep.output_shape(32, 32) == (5, 64)  # class token + 2×2 patches of 16 px, width 64
    assert rep.decoder_kind((5, 64)) == "tokens"
    out = rep.compute(images())
    assert out.shape == (3, 5, 64) and torch.isfinite(out).all()
    ident = rep.identity()
    assert ident["weights"] == "random:0" and ident["tokens"] == "class token + 2x2 patch tokens (row-major)"
    assert ident["pretrained_cfg"] == "test_vit.r160_in1k" and ident["crop"] == "32"


def test_random_weights_are_seeded():
    x = images()
    assert torch.equal(vit(0).compute(x), create(VIT, weights="random", seed=0, crop=32).compute(x))
    assert not torch.equal(vit(0).compute(x), vit(1).compute(x))


def test_cnn_node_gives_a_feature_map_and_nodes_share_one_pass():
    rep = create(CNN, weights="random", crop=32)
    assert rep.output_shape(32, 32) == (48, 4, 4) and rep.decoder_kind((48, 4, 4)) == "conv"
    nodes = NodeSet([CNN, "timm:test_resnet:fc", "timm:test_resnet:act1"], weights="random", crop=32)
    x = images()
    together = nodes.compute(x)
    assert [tuple(t.shape[1:]) for t in together] == [(48, 4, 4), (1000,), (32, 16, 16)]
    for node, features in zip(nodes.representations, together):
        assert torch.allclose(node.compute(x), features, atol=1e-5)
    assert type(rep).network_of(CNN) == "test_resnet"


def test_preprocessing_follows_timms_config():
    rep = vit()
    prep = rep.preprocessing
    cfg = timm.models.get_pretrained_cfg("test_vit")
    assert prep.mean == tuple(cfg.mean) and prep.std == tuple(cfg.std) and prep.interpolation == cfg.interpolation
    assert prep.crop_pct == cfg.crop_pct and prep.scale_size == math.floor(32 / cfg.crop_pct) == 33
    assert rep.target_size(32) == round(32 * 32 / 33) == 31
    assert rep.target_size(330) == 320  # a larger image: timm's resize to 33/32 of the crop, then the crop
    # the resize-then-crop equals timm's own eval transform on an 8-bit image, up to rounding
    from PIL import Image

    x = images(1, 48)
    ours = prep(x)[0]
    transform = timm.data.create_transform(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=cfg.crop_pct,
                                           mean=(0.0,) * 3, std=(1.0,) * 3)
    pil = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    assert (transform(pil) - ours).abs().mean() < 0.02
    default = create("timm:test_resnet:act1", weights="random")  # no crop: timm's input size
    assert default.crop == 160 and default.identity()["interpolation"] == "bilinear"


def test_register_tokens_are_dropped():
    rep = create("timm:vit_small_patch14_reg4_dinov2:blocks.0", weights="random", crop=28)
    assert rep.prefix_tokens == 5 and rep.class_tokens == 1  # class token + 4 registers
    assert rep.output_shape(28, 28) == (5, 384)  # class token + 2×2 patches; not 9 tokens read as a 3×3 grid
    assert "4 other prefix token(s) dropped" in rep.identity()["tokens"]


def test_unknown_model_or_node_is_a_clear_error():
    assert timm_net.name_problem(VIT) is None
    assert "no model 'vit_tinny_patch16_224'" in timm_net.name_problem("timm:vit_tinny_patch16_224:blocks.1")
    problem = timm_net.name_problem("timm:test_vit:blocks.99")
    assert "no graph node 'blocks.99'" in problem and "blocks.1" in problem
    assert "must be timm:<model>:<node>" in timm_net.name_problem("timm:test_vit")
    with pytest.raises(ValueError, match="no graph node"):
        create("timm:test_vit:nothing", weights="random", crop=32)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        create(VIT, weights="random", crop=40)
    with pytest.raises(TypeError, match="unknown parameter"):
        create(VIT, weights="random", arch="x")


def test_offline_without_weights_names_the_cache_and_the_config_key():
    with pytest.raises(WeightsUnavailableError) as err:
        create(VIT)  # weights: pretrained, nothing cached, HF_HUB_OFFLINE=1
    message = str(err.value)
    assert "timm/test_vit.r160_in1k" in message and "HF_HUB_OFFLINE" in message
    assert "models--timm--test_vit.r160_in1k" in message and "features.timm.weights: /path/to/" in message
    assert "never used as a fallback" in message


def test_pretrained_weights_come_from_timms_cache(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    model = vit().model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    import huggingface_hub

    seen = []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, **kw: seen.append((repo, name)) or (str(path) if name == path.name else None))
    rep = create(VIT, crop=32)
    assert seen[0] == ("timm/test_vit.r160_in1k", "model.safetensors")
    assert rep.identity()["weights"] == file_sha256(path) and rep.identity()["weights_source"] == "pretrained"
    assert torch.allclose(rep.compute(images()), vit().compute(images()), atol=1e-5)


def test_local_weights_file_is_loaded_weights_only(tmp_path, monkeypatch):
    # a state dict of the model at its own 160-px size, loaded at 32 px: the position embeddings are
    # resampled to the 2×2 grid by timm's checkpoint filter
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = timm.create_model("test_vit")
    path = tmp_path / "test_vit.pth"
    torch.save(model.state_dict(), path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
    rep = create(VIT, weights=str(path), crop=32)
    assert calls == [True]
    ident = rep.identity()
    assert ident["weights"] == file_sha256(path) and ident["weights_source"] == "path"
    assert ident["weights_file"] == str(path)
    assert torch.equal(rep.model.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    assert rep.model.pos_embed.shape == (1, 5, 64)
    assert not torch.equal(rep.compute(images()), vit().compute(images()))
    at_160 = create(VIT, weights=str(path))  # its own size: the very network that was saved
    x = images(2, 160)
    expected = model.eval().forward_features(at_160.preprocess(x))
    assert torch.allclose(at_160.model.forward_features(at_160.preprocess(x)), expected, atol=1e-5)


class Hostile:
    def __reduce__(self):
        return (print, ("this ran",))


def test_hostile_weights_file_is_refused(tmp_path, capsys):
    path = tmp_path / "hostile.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(1), "payload": Hostile()}, path)
    with pytest.raises(UnsafeFile, match="refusing to load"):
        create(VIT, weights=str(path), crop=32)
    assert "this ran" not in capsys.readouterr().out
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises((UnsafeFile, DamagedFile, ValueError)):
        create(VIT, weights=str(plain), crop=32)
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), other)
    with pytest.raises(ValueError, match="not a state dict of timm's test_vit"):
        create(VIT, weights=str(other), crop=32)
    with pytest.raises(WeightsUnavailableError, match="features.timm.weights"):
        create(VIT, weights=str(tmp_path / "missing.pth"), crop=32)


def _config(tmp_path, **timm_params):
    return {"results": str(tmp_path / "results"), "representations": ["hog", VIT],
            "features": {"timm": {"weights": "random", "crop": 32, **timm_params}}}


def test_config_accepts_timm_names_and_refuses_unknown_ones(tmp_path):
    validate_config(_config(tmp_path), deep=True)
    config = _config(tmp_path)
    config["representations"] = ["timm:vit_base_patch16_clip_224.openai:blocks.11", "timm:test_vit:blocks.99"]
    with pytest.raises(ConfigError) as err:
        validate_config(config, deep=True)
    assert "no graph node 'blocks.99'" in str(err.value) and "clip" not in str(err.value)
    config["representations"] = ["timm:no_such_net:x"]
    with pytest.raises(ConfigError, match="timm has no model 'no_such_net'"):
        validate_config(config, deep=True)


def test_config_names_missing_pretrained_weights_offline(tmp_path):
    with pytest.raises(ConfigError, match=r"features\.timm\.weights: timm:test_vit:blocks\.1: timm weights"):
        validate_config(_config(tmp_path, weights="pretrained"))
    with pytest.raises(ConfigError, match="does not exist"):
        validate_config(_config(tmp_path, weights=str(tmp_path / "missing.safetensors")))


def _documented():
    """The rows of docs/timm.md's preprocessing table: model → its columns."""
    rows = {}
    for line in (ROOT / "docs/timm.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0].startswith(("vit_", "convnext")):
            rows[cells[0]] = cells
    return rows


def test_documented_preprocessing_is_timms():
    rows = _documented()
    assert set(rows) == {"vit_small_patch14_dinov2", "vit_base_patch16_clip_224.openai", "convnext_tiny"}
    for model, (_, tag, size, mean, std, interpolation, crop_pct, grid) in rows.items():
        cfg = timm.models.get_pretrained_cfg(model)
        assert f"{cfg.architecture}.{cfg.tag}" == tag
        assert size == f"{cfg.input_size[1]}×{cfg.input_size[2]}"
        assert [float(v) for v in mean.split(", ")] == pytest.approx(cfg.mean, abs=5e-5)
        assert [float(v) for v in std.split(", ")] == pytest.approx(cfg.std, abs=5e-5)
        assert interpolation == cfg.interpolation and float(crop_pct) == cfg.crop_pct
        with torch.device("meta"):
            model_ = timm.create_model(model)
        if "vit" in model:
            patch = model_.patch_embed.patch_size[0]
            side = cfg.input_size[1] // patch
            prefix = model_.num_prefix_tokens
            assert grid == f"{side}×{side} patches of {patch} px, {prefix} class token, 0 registers"
        else:
            sides = [cfg.input_size[1] // info["reduction"] for info in model_.feature_info]
            assert grid == " / ".join(f"{s}×{s}" for s in sides)
    assert re.search(r"\[docs/timm.md\]\(docs/timm.md\)", (ROOT / "README.md").read_text())


def test_preimage_invert_recomputes_a_timm_node(tmp_path):
    """A decoder trained on a timm node's cache decodes new images: ``preimage invert`` recreates the
    representation from the decoder's provenance (name, parameters, weights identity)."""
    import numpy as np
    from PIL import Image

    from preimage import decoding, train
    from preimage.invert import invert_images
    from tiny_data import builtin_stores

    params = {"weights": "random", "seed": 0, "crop": 32}
    paths = builtin_stores(tmp_path, 32, 2, 1, caches=[(VIT, params, "vit")], splits=("train",))
    train.train_decoder(VIT, str(tmp_path / "vit_train.h5"), str(paths["train"]), str(tmp_path / "decoder.pt"),
                        str(tmp_path / "log.csv"), str(tmp_path / "ckpt.pt"),
                        dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0))
    trained = decoding.TrainedDecoder(tmp_path / "decoder.pt", "cpu")
    assert trained.provenance["representation"] == VIT and trained.provenance["weights"] == "random:0"
    image = tmp_path / "ramp.png"
    y, x = np.mgrid[0:40, 0:50] / 50.0
    Image.fromarray((np.stack([x, 0.3 + 0.5 * y, 1 - x], -1) * 255).astype(np.uint8)).save(image)
    result = invert_images(trained, [image], tmp_path / "out", error=False, progress=False)
    assert Image.open(result.outputs[0]).size == (31, 31)  # the centre that timm's crop covers


def test_documented_example_configuration_is_valid(tmp_path):
    """The representations of docs/timm.md's example exist (models and nodes traced without weights)."""
    import yaml

    text = (ROOT / "docs/timm.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert example["features"]["timm"]["weights"] == "pretrained"
    config = {**example, "results": str(tmp_path / "results"), "features": {"timm": {"weights": "random"}}}
    validate_config(config, deep=True)
    with pytest.raises(ConfigError, match="features.timm.weights"):  # offline, nothing cached
        validate_config({**config, "features": example["features"]})


def test_weights_file_with_another_classifier_or_none_loads_strictly(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ten = timm.create_model("test_resnet", num_classes=10)
        headless = timm.create_model("test_resnet", num_classes=0)
    torch.save(ten.state_dict(), tmp_path / "ten.pth")
    rep = create("timm:test_resnet:fc", weights=str(tmp_path / "ten.pth"), crop=32)
    assert rep.output_shape(32, 32) == (10,) and torch.equal(rep.model.fc.weight, ten.fc.weight)
    torch.save(headless.state_dict(), tmp_path / "headless.pth")
    rep = create("timm:test_resnet:layer2", weights=str(tmp_path / "headless.pth"), crop=32)
    assert torch.equal(rep.model.layer2[0].conv1.weight, headless.layer2[0].conv1.weight)
    state = ten.state_dict()
    del state["layer2.0.conv1.weight"]  # a file that lacks a layer is no state dict of the model
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a state dict of timm's test_resnet"):
        create("timm:test_resnet:layer2", weights=str(tmp_path / "partial.pth"), crop=32)
