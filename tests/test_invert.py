"""``preimage invert``: a trained decoder applied to image files and to stored features, its
provenance, and one clear message per bad input (tiny builtin data, HOG and an untrained ResNet)."""
import tomllib

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from preimage import atomic_files, cli, decoding, image_store, train
from preimage.evaluate import evaluate_decoder
from preimage.features.cache import compute_cache
from preimage.invert import invert_features, invert_images, read_image
from workflow import ROOT
from tiny_data import builtin_stores

SIZE = 32
RESNET = "torchvision:resnet18:layer1"
RESNET_PARAMS = {"weights": "random", "seed": 0, "crop": 32}
FAST = dict(epochs=2, batch_size=8, width=0.125, device="cpu", seed=0)




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builtin crops at 32 px; HOG and ResNet-18 layer1 (random) features; a trained and evaluated
    HOG decoder (``hog/``) and a ResNet decoder (``resnet/``)."""
    root = tmp_path_factory.mktemp("invert")
    representations = [("hog", {"cell_size": 8}, "hog"), (RESNET, RESNET_PARAMS, "resnet")]
    paths = builtin_stores(root, SIZE, 3, 3, caches=representations)
    for rep, _, slug in representations:
        (root / slug).mkdir()
        train.train_decoder(rep, str(root / f"{slug}_train.h5"), str(paths["train"]), str(root / slug / "decoder.pt"),
                            str(root / slug / "log.csv"), str(root / "ckpt.pt"), FAST)
    evaluate_decoder("hog", str(root / "hog/decoder.pt"), str(root / "hog_test.h5"), str(paths["test"]),
                     str(root / "hog_train.h5"), str(paths["train"]), str(root / "hog/error.csv"),
                     str(root / "hog/reconstructions.h5"), device="cpu")
    return root


def decoder(path):
    return decoding.TrainedDecoder(path, "cpu")


def test_the_decoder_records_its_provenance(tiny):
    record = decoder(tiny / "hog/decoder.pt").provenance
    assert record["representation"] == "hog" and record["params"] == {"cell_size": 8}
    assert record["weights"] is None and record["image_size"] == SIZE and record["target_size"] == SIZE
    assert record["feature_dtype"] == "float16" and record["version"] == decoding.PROVENANCE_VERSION
    assert record["images_sha256"] == image_store.image_store_digest(tiny / "train.h5")
    resnet = decoder(tiny / "resnet/decoder.pt").provenance
    assert resnet["weights"] == "random:0" and resnet["params"] == RESNET_PARAMS
    assert resnet["identity"]["crop"] == "32"


def test_image_files_decode_as_evaluate_decodes_the_test_set(tiny, tmp_path):
    # the test images saved as files go through the data stage's preparation unchanged, so the
    # recomputed features and the reconstructions are exactly evaluate's
    with image_store.ImageStore(tiny / "test.h5") as images:
        stored = images.read(0, 3)
    files = []
    for i, image in enumerate(stored):
        files.append(tmp_path / f"test{i}.png")
        Image.fromarray(image.transpose(1, 2, 0)).save(files[-1])
    result = invert_images(decoder(tiny / "hog/decoder.pt"), files, tmp_path / "out", error=True, progress=False)
    with h5py.File(tiny / "hog/reconstructions.h5") as handle:
        expected = handle["reconstructions"][:3]
    written = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in result.outputs])
    assert [p.name for p in result.outputs] == ["test0_hog.png", "test1_hog.png", "test2_hog.png"]
    np.testing.assert_array_equal(written, expected)
    assert result.sheet.stat().st_size > 0 and result.errors_csv.is_file()
    table = pd.read_csv(tiny / "hog/error.csv").set_index("method")
    assert result.summary["normaliser"] == pytest.approx(table.loc["decoder", "normaliser"])
    assert "evaluate's test images" in result.summary["normaliser_source"]
    assert set(result.reference) == {"decoder", "mean_image", "nearest_neighbour"}


def test_stored_features_reproduce_evaluates_error(tiny, tmp_path):
    result = invert_features(decoder(tiny / "hog/decoder.pt"), tiny / "hog_test.h5", tmp_path, error=True,
                             progress=False)
    row = pd.read_csv(tiny / "hog/error.csv").set_index("method").loc["decoder"]
    assert result.summary["n"] == row["n_test"]
    for key in ("error", "ci_low", "ci_high"):  # the same numbers (error.csv holds 6 digits)
        assert result.summary[key] == pytest.approx(row[key], rel=1e-5)
    assert result.errors["psnr"].mean() == pytest.approx(row["psnr"], rel=1e-5)  # six digits here too
    assert result.outputs[0].name == "hog_test_00000_hog.png"


def generated(folder, names=("ramp.png", "waves.jpg")):
    y, x = np.mgrid[0:40, 0:56] / 56.0
    images = [np.stack([x, 0.3 + 0.5 * y, 1 - x], -1), np.stack([0.5 + 0.4 * np.sin(5 * x), 0.9 - 0.7 * y, 0.2 + x / 3], -1)]
    paths = []
    for name, image in zip(names, images):
        paths.append(folder / name)
        Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(paths[-1])
    return paths


def test_new_images_with_recomputed_network_features(tiny, tmp_path):
    inputs = generated(tmp_path)
    result = invert_images(decoder(tiny / "resnet/decoder.pt"), inputs, None, error=True, progress=False)
    # no -o: beside the inputs; no error.csv beside the decoder: normalised by the inputs' mean distance
    assert [p.parent for p in result.outputs] == [tmp_path, tmp_path] and result.sheet.parent == tmp_path
    for path in result.outputs:
        assert Image.open(path).size == (SIZE, SIZE)
    assert result.summary["normaliser_source"] == "mean distance between the 2 inputs" and result.reference is None
    assert np.isfinite(result.errors["error"]).all() and result.summary["n"] == 2


def test_same_stems_get_distinct_outputs(tiny, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = generated(tmp_path / "a", ("x.png", "y.png"))[0]
    second = generated(tmp_path / "b", ("x.png", "y.png"))[0]
    result = invert_images(decoder(tiny / "hog/decoder.pt"), [first, second], tmp_path / "out", progress=False,
                           sheet=False)
    assert [p.name for p in result.outputs] == ["x_hog.png", "x-2_hog.png"] and result.sheet is None


# --------------------------------------------------------------------------- one clear message each


def run_cli(capsys, *args):
    code = cli.main(["invert", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_unreadable_and_missing_images_are_named(tiny, tmp_path, capsys):
    good = generated(tmp_path)[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    code, err = run_cli(capsys, "--decoder", tiny / "hog/decoder.pt", good, bad, "-o", tmp_path / "out", "--quiet")
    assert code == 1 and err.startswith("preimage invert: error: cannot read image") and str(bad) in err
    assert "\n" not in err and not (tmp_path / "out").exists()  # nothing written before the check
    code, err = run_cli(capsys, "--decoder", tiny / "hog/decoder.pt", tmp_path / "missing.png")
    assert code == 1 and err == f"preimage invert: error: cannot read image {tmp_path / 'missing.png'}: no such file"


def test_files_that_are_no_decoder(tiny, tmp_path, capsys):
    png = generated(tmp_path)[0]
    weights = tmp_path / "state.pt"
    torch.save({"conv.weight": torch.zeros(3)}, weights)
    for path, reason in ((png, "not a file torch.save writes"), (weights, "no 'meta' and 'state_dict'"),
                         (tiny / "hog_test.h5", "not a file torch.save writes")):
        code, err = run_cli(capsys, "--decoder", path, png)
        assert code == 1 and err == f"preimage invert: error: {path} is not a preimage decoder ({reason})"


def test_weights_other_than_the_decoders_are_refused(tiny, tmp_path, capsys):
    png = generated(tmp_path)[0]
    other = tmp_path / "resnet18.pt"
    torch.manual_seed(1)
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), other)
    code, err = run_cli(capsys, "--decoder", tiny / "resnet/decoder.pt", png, "--weights", other)
    digest = atomic_files.file_sha256(other)
    assert code == 1 and "\n" not in err
    assert err.startswith(f"preimage invert: error: {tiny / 'resnet/decoder.pt'} was trained on {RESNET} features "
                          "computed with weights random:0, but the weights in use")
    assert f"sha256 {digest[:16]}" in err
    # stored features of other weights
    other_cache = tmp_path / "seed1.h5"
    compute_cache(RESNET, {**RESNET_PARAMS, "seed": 1}, tiny / "test.h5", other_cache, device="cpu")
    code, err = run_cli(capsys, "--decoder", tiny / "resnet/decoder.pt", "--features", other_cache, "-o", tmp_path)
    assert code == 1 and "computed with weights random:1" in err and "random:0" in err


def test_features_of_another_shape_or_representation(tiny, tmp_path, capsys):
    code, err = run_cli(capsys, "--decoder", tiny / "hog/decoder.pt", "--features", tiny / "resnet_test.h5", "-o",
                        tmp_path)
    assert code == 1 and err == (f"preimage invert: error: {tiny / 'resnet_test.h5'} holds features of shape "
                                 f"(64, 8, 8), but {tiny / 'hog/decoder.pt'} decodes features of shape (31, 4, 4)")
    fine = tmp_path / "hog4.h5"  # HOG with other cells: same representation, other shape
    compute_cache("hog", {"cell_size": 4}, tiny / "test.h5", fine, device="cpu")
    code, err = run_cli(capsys, "--decoder", tiny / "hog/decoder.pt", "--features", fine, "-o", tmp_path)
    assert code == 1 and "holds features of shape (31, 8, 8)" in err


def test_a_decoder_without_provenance_is_no_decoder(tiny, tmp_path, capsys):
    """Every decoder records how its features were computed; a file without that record is refused,
    for images and for stored features alike."""
    payload = torch.load(tiny / "hog/decoder.pt", weights_only=True)
    del payload["meta"]["provenance"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    png = generated(tmp_path)[0]
    code, err = run_cli(capsys, "--decoder", old, png)
    assert code == 1 and err == f"preimage invert: error: {old} is not a preimage decoder (its metadata lacks provenance)"
    code, err = run_cli(capsys, "--decoder", old, "--features", tiny / "hog_test.h5", "-o", tmp_path, "--quiet")
    assert code == 1 and "its metadata lacks provenance" in err
    assert not list(tmp_path.glob("hog_test_*.png"))


def test_one_image_needs_a_normaliser(tiny, tmp_path, capsys):
    png = generated(tmp_path)[0]
    code, err = run_cli(capsys, "--decoder", tiny / "resnet/decoder.pt", png, "--error", "-o", tmp_path)
    assert code == 1 and "at least two images" in err
    code, _ = run_cli(capsys, "--decoder", tiny / "resnet/decoder.pt", png, "--error", "--normaliser", "15", "-o",
                      tmp_path, "--quiet")
    assert code == 0 and pd.read_csv(tmp_path / "errors_resnet.csv")["error"].notna().all()


def test_console_script(tiny, tmp_path, capsys):
    # the installed ``preimage`` command is cli.main (``python -m preimage`` runs in test_workflow_vit.py)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["preimage"] == "preimage.cli:main"
    inputs = generated(tmp_path)
    code = cli.main(["invert", "--decoder", str(tiny / "hog/decoder.pt"), *map(str, inputs), "-o", str(tmp_path / "out"),
                     "--error", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 reconstruction(s) written" in out and "normalised error" in out
    assert "evaluate's decoder on the test set" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["errors_hog.csv", "ramp_hog.png", "sheet_hog.png",
                                                                    "waves_hog.png"]
    with pytest.raises(SystemExit):
        cli.main(["invert"])  # --decoder is required: argparse's usage message


def test_photographs_inside_packages(tiny, tmp_path, capsys):
    result = invert_images(decoder(tiny / "hog/decoder.pt"), ["skimage:color.png"], tmp_path, progress=False)
    assert result.names == ["skimage:color.png"] and result.outputs == [tmp_path / "color_hog.png"]
    code, err = run_cli(capsys, "--decoder", tiny / "hog/decoder.pt", "skimage:color.png")
    assert code == 1 and err.endswith("need an output folder (-o)")  # never written into the package


def test_an_autoencoder_decodes_with_its_fine_tuned_encoder(tiny, tmp_path, capsys):
    from preimage.features import create

    folder = tmp_path / "conv2-ae"
    folder.mkdir()
    train.train_autoencoder("conv2", str(tiny / "train.h5"), str(folder / "decoder.pt"), str(folder / "encoder.pt"),
                            str(folder / "log.csv"), str(tmp_path / "ckpt.pt"), {**FAST, "epochs": 1},
                            weights="random", weights_seed=3, crop=67)
    trained = decoder(folder / "decoder.pt")
    record = trained.provenance
    assert record["weights_file"] == "encoder.pt" and record["weights"] == atomic_files.file_sha256(folder / "encoder.pt")
    inputs = generated(tmp_path)
    result = invert_images(trained, inputs, tmp_path / "out", progress=False)
    # the code of the fine-tuned encoder beside the decoder, not of the network it started from
    encoder = create("conv2", weights=str(folder / "encoder.pt"), crop=67)
    images = np.stack([read_image(p, SIZE) for p in inputs])
    with torch.no_grad():
        expected = image_store.to_uint8(trained(encoder(image_store.to_float(images)).numpy()))
    written = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in result.outputs])
    np.testing.assert_array_equal(written, expected)
    # moved without its encoder: the missing file is named; --weights finds it again
    moved = tmp_path / "moved.pt"
    moved.write_bytes((folder / "decoder.pt").read_bytes())
    code, err = run_cli(capsys, "--decoder", moved, inputs[0], "-o", tmp_path / "m")
    assert code == 1 and str(tmp_path / "encoder.pt") in err and err.endswith("(--weights PATH says where they are)")
    code, _ = run_cli(capsys, "--decoder", moved, inputs[0], "-o", tmp_path / "m", "--weights", folder / "encoder.pt",
                      "--quiet")
    assert code == 0
