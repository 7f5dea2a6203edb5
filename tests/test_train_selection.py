"""Which weights training writes: the best validation epoch, early stopping, the mean-image start,
and validation sets that hold out whole photographs."""
import numpy as np
import pandas as pd
import pytest
import torch

from preimage import decoding, image_store, train
from tiny_data import builtin_stores

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """27 builtin crops at 32 px and their HOG features: few enough for a decoder to overfit."""
    root = tmp_path_factory.mktemp("selection")
    builtin_stores(root, SIZE, 3, 1, caches=[("hog", {"cell_size": 8}, "hog")], splits=("train",))
    return root


def _config(**overrides):
    # a seeded run whose validation loss falls to its lowest at epoch 7 and rises at epoch 8
    cfg = dict(epochs=8, batch_size=4, width=0.125, device="cpu", seed=0, val_fraction=0.3, lr=3e-3,
               lr_decay_start=1.0, residual=False)
    cfg.update(overrides)
    return cfg


def _train(root, name, stop_after_epochs=None, **overrides):
    return train.train_decoder("hog", str(root / "hog_train.h5"), str(root / "train.h5"), str(root / f"{name}.pt"),
                               str(root / f"{name}.csv"), str(root / "ckpt" / f"{name}.pt"), _config(**overrides),
                               stop_after_epochs=stop_after_epochs)


def _val_loss(root, name):
    """The validation loss of the written decoder, recomputed from the file."""
    model, meta = decoding.load_decoder(root / f"{name}.pt")
    with image_store.ImageStore(root / "train.h5") as images:
        _, val_idx = train.split_train_val(len(images), 0.3, 0, train.photo_groups(images))
    split = train.PairedSplit(str(root / "hog_train.h5"), str(root / "train.h5"), val_idx, val_idx, meta["image_size"])
    data, _ = split.open(64)
    try:
        return train.evaluate_loss(model, data, lambda f: torch.from_numpy(f).float() * meta["feature_scale"],
                                   model.output_size, torch.device("cpu"), 8)
    finally:
        data.close()


def test_an_overfitting_run_writes_its_best_epoch_not_its_last(tiny):
    best = _train(tiny, "best")
    last = _train(tiny, "last", keep="last")
    losses = [row["val_loss"] for row in best["history"]]
    assert [row["val_loss"] for row in last["history"]] == losses  # the same run, only the output differs
    kept = int(np.argmin(losses)) + 1
    assert kept < len(losses) and losses[-1] > min(losses)  # it did overfit: the last epoch is worse
    assert best["meta"]["kept_epoch"] == kept and last["meta"]["kept_epoch"] == len(losses)
    assert _val_loss(tiny, "best") == pytest.approx(min(losses), rel=1e-5)
    assert _val_loss(tiny, "last") == pytest.approx(losses[-1], rel=1e-5)
    log = pd.read_csv(tiny / "best.csv")
    assert log["kept"].tolist() == [int(e == kept) for e in log["epoch"]]


def test_early_stopping_ends_after_patience_epochs_without_improvement(tiny):
    full = [row["val_loss"] for row in _train(tiny, "reference")["history"]]
    # the first epoch that fails to improve on the one before ends the run with patience 1
    stop = next(i for i in range(1, len(full)) if full[i] >= min(full[:i])) + 1
    result = _train(tiny, "patient", patience=1)
    assert [row["val_loss"] for row in result["history"]] == full[:stop]
    assert result["meta"]["kept_epoch"] == int(np.argmin(full[:stop])) + 1


def test_resume_keeps_the_best_weights_bit_identical(tiny):
    _train(tiny, "whole")
    assert _train(tiny, "interrupted", stop_after_epochs=7) == {"stopped_at": 7}  # killed after the best epoch
    _train(tiny, "interrupted")
    a = torch.load(tiny / "whole.pt", weights_only=True)
    b = torch.load(tiny / "interrupted.pt", weights_only=True)
    assert a["meta"]["kept_epoch"] == b["meta"]["kept_epoch"] < 8
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_the_residual_decoder_starts_from_the_mean_training_image(tiny):
    result = _train(tiny, "mean_start", residual=True, epochs=1, lr=1e-12)
    model, meta = decoding.load_decoder(tiny / "mean_start.pt")
    assert meta["residual"] and model.residual
    with image_store.ImageStore(tiny / "train.h5") as images:
        train_idx, _ = train.split_train_val(len(images), 0.3, 0)
    mean = train.mean_target(str(tiny / "train.h5"), train_idx, SIZE, model.output_size)
    features = torch.randn(2, *meta["feature_shape"])
    with torch.no_grad():
        out = model(features)
    # a negligible learning rate leaves the zeroed last layer at zero: the output is the mean image
    torch.testing.assert_close(out, mean.expand_as(out), rtol=0, atol=1e-6)
    assert result["history"][0]["val_loss"] > 0


def test_validation_holds_out_whole_photographs():
    groups = np.repeat(np.arange(20), 4)  # 20 photographs, 4 crops each
    train_idx, val_idx = train.split_train_val(len(groups), 0.25, 0, groups)
    assert len(val_idx) == 5 * 4 and len(train_idx) + len(val_idx) == 80
    assert not set(groups[train_idx]) & set(groups[val_idx])
    again = train.split_train_val(len(groups), 0.25, 0, groups)
    assert np.array_equal(again[1], val_idx)
    # without groups every image is its own: the split of earlier runs
    plain_train, plain_val = train.split_train_val(80, 0.25, 0)
    assert len(plain_val) == 20 and len(set(groups[plain_val])) > 5


def test_keep_and_patience_are_checked():
    with pytest.raises(ValueError, match="train.keep"):
        train.TrainConfig(keep="first")
    with pytest.raises(ValueError, match="train.patience"):
        train.TrainConfig(patience=-1)
