"""A ViT token layer end to end through the workflow (the shared tiny run, tests/conftest.py: tiny_run;
offline: random weights at a 32-px crop), then ``preimage invert`` with the decoder it trained on two
generated images."""
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from preimage import image_store, metrics
from preimage.data import resize_center_crop
from preimage.evaluate import mean_training_image
from workflow import ENV, ROOT

pytestmark = pytest.mark.slow

LAYER = "torchvision:vit_b_16:encoder.layers.encoder_layer_1"
SLUG = "vit_b_16@encoder.layers.encoder_layer_1"


@pytest.fixture(scope="module")
def finished_run(tiny_run):
    return tiny_run.workdir


def generated_images(folder):
    """Two smooth colourful images of other sizes than the data's (so they are resized and cropped)."""
    y, x = np.mgrid[0:60, 0:90] / 90.0
    ramp = np.stack([x, 0.3 + 0.5 * y, 1 - x], -1)
    waves = np.stack([0.5 + 0.4 * np.sin(5 * x), 0.9 - 0.7 * y, 0.2 + 0.3 * x], -1)
    paths = [folder / "ramp.png", folder / "waves.jpg"]
    for path, image in zip(paths, (ramp, waves)):
        Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(path)
    return paths


def test_token_layer_runs_through_the_workflow(finished_run):
    results = finished_run / "results"
    with h5py.File(results / f"features/{SLUG}/train.h5") as handle:
        assert handle["features"].shape == (4 * 7, 5, 768)  # class token + 2×2 patch tokens of ViT-B/16
        assert handle.attrs["decoder_kind"] == "tokens"
    meta = torch.load(results / SLUG / "decoder.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["kind"] == "tokens" and meta["feature_shape"] == [5, 768]
    assert meta["provenance"]["weights"] == "random:0" and meta["provenance"]["params"]["crop"] == 32
    table = pd.read_csv(results / SLUG / "error.csv").set_index("method")
    assert np.isfinite(table.loc["decoder", "error"])
    assert LAYER in set(pd.read_csv(results / "tables/errors.csv")["representation"])


def test_invert_with_the_trained_decoder(finished_run, tmp_path):
    results = finished_run / "results"
    inputs = generated_images(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "preimage", "invert", "--decoder", str(results / SLUG / "decoder.pt"),
               *map(str, inputs), "-o", str(out), "--error", "--device", "cpu"]
    run = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "normalised error" in run.stdout
    for path in inputs:
        with Image.open(out / f"{path.stem}_{SLUG}.png") as image:
            assert image.size == (32, 32)  # the 32-px crop the ViT sees
    assert (out / f"sheet_{SLUG}.png").stat().st_size > 0
    errors = pd.read_csv(out / f"errors_{SLUG}.csv")
    assert list(errors["input"]) == [str(p) for p in inputs] and np.isfinite(errors["error"]).all()
    # the reference a decoder must beat: the mean training image, at the same normaliser (evaluate's)
    normaliser = float(pd.read_csv(results / SLUG / "error.csv")["normaliser"].iloc[0])
    targets = image_store.to_float(np.stack([resize_center_crop(Image.open(p).convert("RGB"), 32) for p in inputs]))
    with image_store.ImageStore(results / "data/train.h5") as train:
        mean = mean_training_image(train).expand_as(targets)
    reference = metrics.normalised_error(mean, targets, normaliser)
    assert errors["error"].mean() < reference.mean()
