"""Training and evaluation on a tiny dataset: resume, NaN guard, error table, reference rows."""
import numpy as np
import pandas as pd
import pytest
import torch

from preimage import decoding, image_store, train
from preimage.evaluate import evaluate_decoder
from preimage.features.cache import FeatureStore
from preimage.plotting import show_indices
from tiny_data import assert_same_decoder_weights, builtin_stores

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builtin crops at 32 px and their HOG features (train and test)."""
    root = tmp_path_factory.mktemp("tiny")
    builtin_stores(root, SIZE, 6, 4, caches=[("hog", {"cell_size": 8}, "hog")])
    return root


def _config(**overrides):
    cfg = dict(epochs=3, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    cfg.update(overrides)
    return cfg


def _train(root, name, stop_after_epochs=None, **overrides):
    return train.train_decoder("hog", str(root / "hog_train.h5"), str(root / "train.h5"), str(root / f"{name}.pt"),
                               str(root / f"{name}.csv"), str(root / "ckpt" / f"{name}.pt"), _config(**overrides),
                               stop_after_epochs=stop_after_epochs)


def test_training_lowers_the_loss_and_writes_outputs(tiny):
    result = _train(tiny, "plain")
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    log = pd.read_csv(tiny / "plain.csv")
    assert list(log.columns[:3]) == ["epoch", "train_loss", "val_loss"] and len(log) == 3
    model, meta = decoding.load_decoder(tiny / "plain.pt")
    assert meta["kind"] == "two_stream" and meta["output_size"] == SIZE
    assert not (tiny / "ckpt" / "plain.pt").exists()  # the checkpoint is removed after success


def test_resume_after_interruption_gives_the_same_weights(tiny):
    _train(tiny, "uninterrupted")
    stopped = _train(tiny, "resumed", stop_after_epochs=1)  # a job killed after epoch 1
    assert stopped == {"stopped_at": 1}
    assert (tiny / "ckpt" / "resumed.pt").exists() and not (tiny / "resumed.pt").exists()
    _train(tiny, "resumed")
    assert_same_decoder_weights(tiny / "uninterrupted.pt", tiny / "resumed.pt")
    assert pd.read_csv(tiny / "resumed.csv")["epoch"].tolist() == [1, 2, 3]


def test_checkpoint_of_another_configuration_is_ignored(tiny):
    _train(tiny, "other", stop_after_epochs=1, lr=5e-4)
    result = _train(tiny, "other")  # different lr: must start over, not resume
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_error(tiny, monkeypatch):
    real_build = train.build_decoder

    def broken(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        return model

    monkeypatch.setattr(train, "build_decoder", broken)
    with pytest.raises(train.NonFiniteLoss, match="loss became nan at epoch 1, step 1"):
        _train(tiny, "nan")


def test_terms_read_back_every_few_steps_give_the_same_run(tiny, monkeypatch):
    # on a GPU the loss terms are read back every SETTLE_EVERY steps (no host-GPU sync per step)
    every_step = _train(tiny, "settle1")
    monkeypatch.setattr(train, "settle_interval", lambda device: 4)
    windowed = _train(tiny, "settle4")
    for a, b in zip(every_step["history"], windowed["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12) and a["val_loss"] == b["val_loss"]
    state = lambda name: torch.load(tiny / f"{name}.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state("settle4")[k]) for k, v in state("settle1").items())


def test_a_non_finite_term_read_back_late_names_its_step(tiny, monkeypatch):
    real_build = train.build_decoder
    calls = []

    def breaks_at_third_step(*args, **kwargs):
        model = real_build(*args, **kwargs)
        # training steps only: the validation pass before epoch 1 must not count
        model.register_forward_hook(lambda module, inputs, output: output * float("nan") if module.training and (
                                    len(calls) >= 2 or calls.append(1)) else output)
        return model

    monkeypatch.setattr(train, "build_decoder", breaks_at_third_step)
    monkeypatch.setattr(train, "settle_interval", lambda device: 4)
    with pytest.raises(train.NonFiniteLoss, match="loss became nan at epoch 1, step 3"):
        _train(tiny, "nan_late")


def test_learning_rate_schedule():
    cfg = train.TrainConfig(lr=1e-3, lr_decay_start=0.5, lr_final=0.01)
    assert train.learning_rate(cfg, 0.0) == train.learning_rate(cfg, 0.5) == 1e-3
    assert train.learning_rate(cfg, 0.75) < 1e-3
    assert train.learning_rate(cfg, 1.0) == pytest.approx(1e-5)


def test_split_is_seeded_and_disjoint():
    a_train, a_val = train.split_train_val(100, 0.1, seed=3)
    b_train, b_val = train.split_train_val(100, 0.1, seed=3)
    assert np.array_equal(a_val, b_val) and len(a_val) == 10
    assert not set(a_train) & set(a_val) and len(a_train) + len(a_val) == 100


def test_streaming_and_in_memory_batches_agree(tiny):
    indices = np.arange(20)
    memory = train.PairedData(str(tiny / "hog_train.h5"), str(tiny / "train.h5"), indices, preload_mb=100)
    streamed = train.PairedData(str(tiny / "hog_train.h5"), str(tiny / "train.h5"), indices, preload_mb=0)
    assert memory.in_memory and not streamed.in_memory
    for source in (memory, streamed):
        feats, imgs = zip(*source.batches(8, np.random.default_rng(0)))
        feats, imgs = np.concatenate(feats), np.concatenate(imgs)
        assert len(feats) == 20
        order = np.lexsort(feats.reshape(20, -1).T)
        source.sorted = (feats[order], imgs[order])
    assert np.array_equal(memory.sorted[0], streamed.sorted[0]) and np.array_equal(memory.sorted[1], streamed.sorted[1])


def test_evaluation_rows_and_reconstructions(tiny):
    _train(tiny, "evaluated", epochs=2)
    table = evaluate_decoder("hog", str(tiny / "evaluated.pt"), str(tiny / "hog_test.h5"), str(tiny / "test.h5"),
                             str(tiny / "hog_train.h5"), str(tiny / "train.h5"), str(tiny / "error.csv"),
                             str(tiny / "recon.h5"), device="cpu")
    assert table["method"].tolist() == ["decoder", "mean_image", "nearest_neighbour"]
    assert (table["ci_low"] <= table["error"]).all() and (table["error"] <= table["ci_high"]).all()
    with image_store.ImageStore(tiny / "test.h5") as test_images:
        assert (table["n_test"] == len(test_images)).all()
    assert pd.read_csv(tiny / "error.csv").shape == table.shape
    with image_store.ImageStore(tiny / "test.h5") as images:
        import h5py

        with h5py.File(tiny / "recon.h5") as handle:
            recon = handle["reconstructions"]
            assert recon.shape == (len(images), 3, SIZE, SIZE) and recon.dtype == np.uint8
            stored_neighbours, stored_mean = np.asarray(handle["nearest_neighbour"]), np.asarray(handle["mean_image"])
    # what the scorecard reads instead of recomputing: the neighbours, the mean image and each method's time
    from preimage.evaluate import mean_training_image, nearest_neighbours

    with FeatureStore(tiny / "hog_test.h5") as test, FeatureStore(tiny / "hog_train.h5") as train_features:
        assert np.array_equal(stored_neighbours, nearest_neighbours(test, train_features, torch.device("cpu"))[0])
    with image_store.ImageStore(tiny / "train.h5") as train_images:
        assert np.allclose(stored_mean, mean_training_image(train_images).numpy(), atol=1e-7)
    assert stored_mean.dtype == np.float32 and stored_mean.shape == (3, SIZE, SIZE)
    assert (table["seconds_per_image"] > 0).all() and np.isfinite(table["seconds_per_image"]).all()


def test_nearest_neighbour_of_a_training_image_is_itself(tiny):
    from preimage.evaluate import nearest_neighbours

    with FeatureStore(tiny / "hog_train.h5") as feats:
        index, searched = nearest_neighbours(feats, feats, torch.device("cpu"))
    assert searched == len(index) and np.array_equal(index, np.arange(len(index)))


def test_show_indices_are_fixed_and_spread():
    assert show_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert show_indices(3, 8).tolist() == [0, 1, 2]


def _train_autoencoder(root, name, stop_after_epochs=None, **overrides):
    return train.train_autoencoder(
        "conv2", str(root / "train.h5"), str(root / f"{name}.pt"), str(root / f"{name}_encoder.pt"),
        str(root / f"{name}.csv"), str(root / "ckpt" / f"{name}.pt"), _config(epochs=2, keep="last", **overrides),
        weights="random", weights_seed=3, crop=67, encoder_lr_scale=0.5, stop_after_epochs=stop_after_epochs)


def test_autoencoder_fine_tunes_the_encoder_and_its_code_is_a_representation(tiny):
    from preimage.features import create

    result = _train_autoencoder(tiny, "ae")
    assert result["meta"]["representation"] == "conv2-ae" and "autoencoder" in result["meta"]["label"]
    start = create("conv2", weights="random", seed=3, crop=67)
    tuned = create("conv2", weights=str(tiny / "ae_encoder.pt"), crop=67)
    first = "features.0.weight"
    assert not torch.equal(start.model.state_dict()[first], tuned.model.state_dict()[first])
    # fc layers are above conv2: the autoencoder never touches them
    assert torch.equal(start.model.state_dict()["classifier.6.weight"], tuned.model.state_dict()["classifier.6.weight"])
    images = image_store.to_float(image_store.ImageStore(tiny / "test.h5").read(0, 2))
    with torch.no_grad():
        code = tuned(images)
    assert code.shape[1:] == tuple(result["meta"]["feature_shape"])
    model, meta = decoding.load_decoder(tiny / "ae.pt")
    # A conv decoder predicts its native F·2^n pixels (decoders.ConvDecoder); evaluation upsamples.
    assert model.output_size == meta["output_size"] and model.image_size == SIZE
    assert model(code * meta["feature_scale"]).shape == (2, 3, model.output_size, model.output_size)


def test_autoencoder_resumes_to_the_same_weights(tiny):
    _train_autoencoder(tiny, "ae_full")
    assert _train_autoencoder(tiny, "ae_resumed", stop_after_epochs=1) == {"stopped_at": 1}
    _train_autoencoder(tiny, "ae_resumed")
    for suffix in (".pt", "_encoder.pt"):
        a = torch.load(tiny / f"ae_full{suffix}", weights_only=True)
        b = torch.load(tiny / f"ae_resumed{suffix}", weights_only=True)
        a, b = a.get("state_dict", a), b.get("state_dict", b)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
