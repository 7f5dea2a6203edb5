"""Decoders reconstruct, and are scored on, the part of the image the representation sees
(paper Table 1: AlexNet sees the centre 227 px of a 256-px image)."""
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from preimage import decoding, image_store, metrics, train
from preimage.evaluate import evaluate_decoder
from preimage.features import create
from preimage.features.cache import FeatureStore
from tiny_data import builtin_stores

SIZE, CROP = 32, 24
REP = "torchvision:resnet18:layer1"
PARAMS = {"weights": "random", "seed": 0, "crop": CROP}


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    """Builtin crops at 32 px and resnet18 layer1 features of their centre 24 px."""
    root = tmp_path_factory.mktemp("cropped")
    builtin_stores(root, SIZE, 4, 4, caches=[(REP, PARAMS, "f")])
    cfg = dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    train.train_decoder(REP, str(root / "f_train.h5"), str(root / "train.h5"), str(root / "decoder.pt"),
                        str(root / "log.csv"), str(root / "ckpt.pt"), cfg)
    evaluate_decoder(REP, str(root / "decoder.pt"), str(root / "f_test.h5"), str(root / "test.h5"),
                     str(root / "f_train.h5"), str(root / "train.h5"), str(root / "error.csv"),
                     str(root / "recon.h5"), device="cpu")
    return root


def test_target_size_is_the_crop_a_network_sees_and_the_whole_image_otherwise():
    alexnet = create("conv5", weights="random", seed=0)
    assert alexnet.target_size(256) == 227 and alexnet.target_size(227) == 227
    assert alexnet.target_size(64) == 64  # smaller images are upscaled whole: the network sees all of them
    assert create("hog").target_size(256) == 256


def test_centre_crop_takes_the_middle_window():
    images = np.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6)
    window = image_store.centre_crop(images, 4)
    assert window.shape == (2, 3, 4, 4) and np.array_equal(window, images[..., 1:5, 1:5])
    assert image_store.centre_crop(images, 6) is images
    with pytest.raises(ValueError):
        image_store.centre_crop(images, 7)


def test_feature_cache_records_the_region_its_features_see(cropped):
    with FeatureStore(cropped / "f_train.h5") as feats:
        assert feats.attrs["target_size"] == CROP and feats.attrs["image_size"] == SIZE


def test_the_decoder_reconstructs_the_crop_and_is_scored_on_it(cropped):
    _, meta = decoding.load_decoder(cropped / "decoder.pt")
    assert meta["image_size"] == CROP
    table = pd.read_csv(cropped / "error.csv")
    assert (table["eval_size"] == CROP).all()
    assert table.loc[table.method == "decoder", "output_size"].item() == meta["output_size"]
    with h5py.File(cropped / "recon.h5", "r") as handle:
        recon = handle["reconstructions"][:]
    assert recon.shape[-2:] == (CROP, CROP)
    # the normaliser is the mean distance between the test crops, not the whole images
    with image_store.ImageStore(cropped / "test.h5") as full:
        crops = image_store.centre_crop(image_store.to_float(full.read(0, len(full))), CROP)
        whole = image_store.to_float(full.read(0, len(full)))
    assert table["normaliser"].iloc[0] == pytest.approx(metrics.mean_pairwise_distance(crops), rel=1e-5)
    assert table["normaliser"].iloc[0] < metrics.mean_pairwise_distance(whole)
    # the decoder row is the error of the stored reconstructions against the crops (uint8 rounding aside)
    errors = metrics.normalised_error(image_store.to_float(recon), crops, table["normaliser"].iloc[0])
    assert float(np.mean(errors)) == pytest.approx(table.loc[table.method == "decoder", "error"].item(), abs=5e-3)


def test_cropped_image_store_reads_and_takes_the_same_windows(cropped):
    with image_store.ImageStore(cropped / "test.h5") as full, image_store.ImageStore(cropped / "test.h5", crop=CROP) as view:
        assert view.size == CROP and view.stored_size == SIZE
        assert np.array_equal(view.read(1, 3), image_store.centre_crop(full.read(1, 3), CROP))
        assert np.array_equal(view.take([3, 0]), image_store.centre_crop(full.take([3, 0]), CROP))
        assert view.float_view()[0:2].shape == (2, 3, CROP, CROP)
    with pytest.raises(ValueError):
        image_store.ImageStore(cropped / "test.h5", crop=SIZE + 1)
