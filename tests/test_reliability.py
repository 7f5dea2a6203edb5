"""Reliability: no code runs from a .pt file, failures reach the job's log, damaged stores and a
full disk are named, stale temporaries are removed."""
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from preimage import atomic_files, decoding, hdf5, image_store, logs, torch_files, train, weights
from preimage.config import validate_config
from preimage.features import create
from preimage.features.cache import FeatureStore, write_feature_store

from workflow import ENV, ROOT, planned_jobs, snakemake, write_config
from tiny_data import builtin_stores

SIZE = 32


class Hostile:
    """Unpickling this creates ``marker`` (``open(marker, 'w')``): a stand-in for any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class HostileShell:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_files(tmp_path, name):
    """(path, marker) pairs: torch.save of a dict holding a hostile object, and a bare pickle."""
    out = []
    for i, (kind, obj) in enumerate([("torch", Hostile), ("pickle", HostileShell)]):
        marker = tmp_path / f"{name}-marker-{i}"
        path = tmp_path / f"{name}-{kind}.pt"
        payload = {"state_dict": {"w": torch.zeros(2)}, "meta": obj(marker)}
        if kind == "torch":
            torch.save(payload, path)
        else:
            with open(path, "wb") as handle:
                pickle.dump(payload, handle)
        out.append((path, marker))
    return out


def test_the_hostile_fixtures_do_run_code_when_unpickled(tmp_path):
    # guards the tests below: these files really would create their markers if loaded unsafely
    for path, marker in _hostile_files(tmp_path, "control"):
        if path.name.endswith("torch.pt"):
            torch.load(path, weights_only=False)
        else:
            with open(path, "rb") as handle:
                pickle.load(handle)
        assert marker.exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    builtin_stores(root, SIZE, 4, 2, caches=[("hog", {"cell_size": 8}, "hog")], splits=["train"])
    return root


def _train(root, out, checkpoint, **overrides):
    cfg = dict(epochs=2, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    cfg.update(overrides)
    return train.train_decoder("hog", str(root / "hog_train.h5"), str(root / "train.h5"), str(out),
                               str(out.with_suffix(".csv")), str(checkpoint), cfg)


# --------------------------------------------------------------------------- 1. no code from a .pt file


def test_hostile_checkpoint_is_ignored_without_running_it(tiny, tmp_path, caplog):
    for path, marker in _hostile_files(tmp_path, "checkpoint"):
        checkpoint = tmp_path / "ckpt" / f"{path.stem}.pt"
        checkpoint.parent.mkdir(exist_ok=True)
        shutil.copy(path, checkpoint)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="preimage"):
            result = _train(tiny, tmp_path / f"{path.stem}-decoder.pt", checkpoint)
        assert not marker.exists(), "loading the checkpoint ran code"
        assert "ignoring unreadable checkpoint" in caplog.text and str(checkpoint) in caplog.text
        assert [row["epoch"] for row in result["history"]] == [1, 2]  # a fresh start


def test_damaged_checkpoint_is_ignored(tiny, tmp_path, caplog):
    checkpoint = tmp_path / "train.pt"
    checkpoint.write_bytes(b"PK\x03\x04 not really a zip file")
    with caplog.at_level(logging.INFO, logger="preimage"):
        result = _train(tiny, tmp_path / "decoder.pt", checkpoint)
    assert "ignoring unreadable checkpoint" in caplog.text
    assert len(result["history"]) == 2 and not checkpoint.exists()


def test_checkpoint_holds_only_tensors_and_plain_values(tiny, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    train.train_decoder("hog", str(tiny / "hog_train.h5"), str(tiny / "train.h5"), str(tmp_path / "d.pt"),
                        str(tmp_path / "d.csv"), str(checkpoint),
                        dict(epochs=2, batch_size=8, width=0.125, device="cpu"), stop_after_epochs=1)
    state = torch.load(checkpoint, weights_only=True)  # raises if anything else were pickled
    assert state["epoch"] == 1 and state["torch_rng"]["cpu"].dtype == torch.uint8


def test_hostile_decoder_is_refused(tmp_path):
    for path, marker in _hostile_files(tmp_path, "decoder"):
        with pytest.raises(torch_files.UnsafeFile, match=f"refusing to load {path}.*could run code"):
            decoding.load_decoder(path)
        assert not marker.exists()


def test_hostile_weights_and_autoencoder_encoder_are_refused(tmp_path):
    for path, marker in _hostile_files(tmp_path, "encoder"):
        # the autoencoder's encoder.pt is read as AlexNet weights from a path
        with pytest.raises(torch_files.UnsafeFile, match="refusing to load"):
            create("fc6", weights=str(path))
        with pytest.raises(torch_files.UnsafeFile, match="refusing to load"):
            weights.load_model("resnet18", str(path))
        assert not marker.exists()


def test_hostile_file_in_the_torch_hub_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = weights.cached_weights_path(weights.resolve_imagenet_weights("alexnet"))
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "hub-marker"
    torch.save({"features.0.weight": Hostile(marker)}, cached)
    with pytest.warns(UserWarning, match="not the official file"), pytest.raises(torch_files.UnsafeFile, match=str(cached)):
        weights.load_model("alexnet", "imagenet")
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after the load


def test_every_torch_load_in_the_project_is_weights_only():
    sources = list((ROOT / "src").rglob("*.py")) + list((ROOT / "workflow").rglob("*.py"))
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and not line.lstrip().startswith(("#", "``")):
                assert "weights_only=True" in line, f"{path}:{number}: {line.strip()}"


# --------------------------------------------------------------------------- 2. failures reach the log


class FakeSnakemake:
    """What logs.job reads from a script's ``snakemake`` object."""

    def __init__(self, log, output=(), checkpoint=None):
        self.log = [str(log)]
        self.output = [str(p) for p in output]
        self.params = types.SimpleNamespace(checkpoint=str(checkpoint)) if checkpoint else types.SimpleNamespace()
        self.rule = "demo"


def test_job_logs_its_fatal_error_with_the_traceback(tmp_path, capsys):
    log = tmp_path / "logs" / "demo.log"
    with pytest.raises(SystemExit) as info:
        with logs.job(FakeSnakemake(log)):
            logging.getLogger("preimage.demo").info("working")
            raise ValueError("the reason it failed")
    assert info.value.code == 1
    text = log.read_text()
    assert "working" in text
    assert "ERROR preimage: demo failed: ValueError: the reason it failed" in text
    assert text.index("demo failed") < text.index("Traceback (most recent call last)")
    err = capsys.readouterr().err
    assert "demo failed: ValueError: the reason it failed" in err and f"traceback in {log}" in err


def test_sigterm_is_logged_and_partial_outputs_removed(tmp_path):
    log, out = tmp_path / "logs" / "demo.log", tmp_path / "out" / "features.h5"
    code = (
        "import time, types\nfrom preimage import atomic_files, logs\n"
        f"smk = types.SimpleNamespace(log=[{str(log)!r}], output=[{str(out)!r}], params=types.SimpleNamespace(), "
        "rule='demo')\n"
        "with logs.job(smk):\n"
        f"    with atomic_files.atomic_path({str(out)!r}) as tmp:\n"
        "        open(tmp, 'w').write('partial')\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(120)\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), ENV.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 143
    assert "demo failed: Terminated: stopped by signal SIGTERM" in log.read_text()
    assert list(out.parent.iterdir()) == []


def test_process_pools_inside_a_job_still_terminate(tmp_path):
    # Pool.__exit__ sends SIGTERM to its workers; the job's SIGTERM handler must not reach them
    # (a worker that got SIGTERM right after its fork used to hang the job, ~10 % of 5 pools)
    code = (
        "import multiprocessing, types\nfrom preimage import logs\n"
        f"smk = types.SimpleNamespace(log=[{str(tmp_path / 'demo.log')!r}], output=[], "
        "params=types.SimpleNamespace(), rule='demo')\n"
        "with logs.job(smk):\n"
        "    for _ in range(40):\n"
        "        with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "            pool.map(abs, range(4))\n"
        "print('ok')\n")
    result = _run_python(code, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_every_script_uses_the_common_job_setup():
    for script in (ROOT / "workflow" / "scripts").glob("*.py"):
        text = script.read_text()
        assert "with logs.job(snakemake):" in text, script.name
        assert "logs.setup(" not in text and "setup_snakemake_job" not in text, script.name


@pytest.mark.slow
def test_a_failing_job_writes_its_error_to_its_log(tmp_path):
    images = tmp_path / "images"
    for name in ("cats", "dogs"):
        (images / name).mkdir(parents=True)
        for i in range(3):  # enough files to pass the count; none decodes
            (images / name / f"{i}.jpg").write_bytes(b"not a jpeg")
    config = write_config(tmp_path / "bad.yaml", {
        "data": {"source": "folder", "root": str(images), "size": 32, "train_per_class": 2, "test_per_class": 1},
        "representations": ["hog"]})
    result = snakemake(tmp_path, "results/data/train.h5", configfile=config, check=False)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/data/extract.log").read_text()
    assert "extract_data failed: DataError: class 'cats'" in log and "Traceback" in log
    assert "skipped" in log  # the INFO/WARNING lines before it are kept


# --------------------------------------------------------------------------- 3. names checked first


@pytest.mark.parametrize("name, expected", [
    ("torchvision:notamodel:layer4", "torchvision has no model 'notamodel'"),
    ("torchvision:resnet18:layer9", "resnet18 has no graph node 'layer9'"),
])
def test_unknown_torchvision_model_or_node_is_refused_in_one_line(name, expected):
    with pytest.raises(Exception) as info:
        validate_config({"representations": ["hog", name]}, deep=True)
    message = str(info.value)
    assert message.startswith("invalid configuration: representations: ") and expected in message
    assert "\n" not in message
    validate_config({"representations": ["hog", name]})  # the shallow check (jobs) does not trace


def test_valid_torchvision_names_pass():
    validate_config({"representations": ["torchvision:resnet18:layer4", "torchvision:resnet18:layer4.1.relu_1",
                                         "torchvision:vgg16:features.29"]}, deep=True)


def _folder(root, counts):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.png").write_bytes(b"")
    return root


def test_folder_with_too_few_images_is_refused(tmp_path):
    root = _folder(tmp_path / "images", {"cats": 5, "dogs": 2})
    config = {"results": str(tmp_path / "results"),
              "data": {"source": "folder", "root": str(root), "train_per_class": 3, "test_per_class": 1}}
    with pytest.raises(Exception) as info:
        validate_config(config, deep=True)
    message = str(info.value)
    assert "data.train_per_class + data.test_per_class: class 'dogs' has 2 candidate" in message
    assert "fewer than 4" in message and "'cats'" not in message
    config["data"]["train_per_class"] = 1
    validate_config(config, deep=True)


def test_images_are_not_counted_again_once_extracted(tmp_path):
    root = _folder(tmp_path / "images", {"cats": 1})
    config = {"results": str(tmp_path / "results"),
              "data": {"source": "folder", "root": str(root), "train_per_class": 3, "test_per_class": 1}}
    with pytest.raises(Exception, match="class 'cats' has 1"):
        validate_config(config, deep=True)
    (tmp_path / "results/data").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "results/data" / f"{split}.h5").write_bytes(b"")
    validate_config(config, deep=True)


def test_imagenet_counts_train_and_val_separately(tmp_path):
    root = tmp_path / "ilsvrc"
    _folder(root / "train", {"n01": 4, "n02": 4})
    _folder(root / "val", {"n01": 2, "n02": 1})
    config = {"results": str(tmp_path / "results"), "data": {"source": "imagenet", "root": str(root), "train_per_class": 4, "test_per_class": 2}}
    with pytest.raises(Exception, match=r"data.test_per_class: class 'n02' has 1 candidate image file\(s\) in val/"):
        validate_config(config, deep=True)
    config["data"]["train_per_class"] = 5
    with pytest.raises(Exception, match="data.train_per_class: class 'n01' has 4"):
        validate_config(config, deep=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision:notamodel:layer4", "torchvision:resnet18:layer9"])
def test_dry_run_refuses_a_bad_name_in_one_line(tmp_path, name):
    config = write_config(tmp_path / "c.yaml", {"representations": ["hog", name]})
    result = snakemake(tmp_path, "-n", configfile=config, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "representations" in line]
    assert len(lines) == 1 and lines[0].startswith("preimage: invalid configuration: representations: "), \
        result.stderr
    assert name in lines[0] and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- 4. damaged files named


def test_truncated_store_is_named(tiny, tmp_path):
    for cls, name in ((image_store.ImageStore, "train.h5"), (FeatureStore, "hog_train.h5")):
        broken = tmp_path / name
        content = (tiny / name).read_bytes()
        broken.write_bytes(content[: len(content) // 2])
        with pytest.raises(atomic_files.DamagedFile) as info:
            cls(broken)
        message = str(info.value)
        assert message.startswith(f"{broken} is damaged (") and message.endswith("); delete it and rerun")
        assert "truncated file" in message


def test_corrupt_data_inside_a_store_is_named_when_read(tmp_path):
    broken = tmp_path / "features.h5"
    with write_feature_store(broken, 8, (16, 8, 8), "float32", {"representation": "demo"}) as writer:
        writer.append(np.zeros((8, 16, 8, 8), np.float32))  # the chunk goes through the zlib filter
    with h5py.File(broken, "r") as handle:
        chunk = handle["features"].id.get_chunk_info(0)
    assert chunk.filter_mask == 0
    with open(broken, "r+b") as handle:  # scramble the compressed chunk
        handle.seek(chunk.byte_offset)
        handle.write(b"\xff" * chunk.size)
    with FeatureStore(broken) as features:  # opens: the damage is in the data
        with pytest.raises(atomic_files.DamagedFile, match=f"{broken} is damaged .checksum mismatch in dataset 'features'."):
            features.read(0, 1)


def test_a_store_missing_its_dataset_is_named(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w"):
        pass
    with pytest.raises(atomic_files.DamagedFile, match="empty.h5 is damaged"):
        image_store.ImageStore(path)
    with pytest.raises(atomic_files.DamagedFile, match="empty.h5 is damaged"):
        FeatureStore(path)


def test_damaged_decoder_is_named(tmp_path):
    path = tmp_path / "decoder.pt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": {}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(atomic_files.DamagedFile, match=f"{path} is damaged .*delete it and rerun"):
        decoding.load_decoder(path)


# --------------------------------------------------------------------------- 5. a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'not permitted'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _leftovers(folder):
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


def _run_python(code, timeout=300):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), ENV.get("PYTHONPATH", "")])})


def test_feature_store_on_a_full_disk_fails_cleanly(small_disk):
    out = small_disk / "features" / "fc6" / "train.h5"
    result = _run_python(
        "import numpy as np\nfrom preimage.features.cache import write_feature_store\n"
        f"with write_feature_store({str(out)!r}, 400, (64, 32, 32), 'float32', {{}}) as w:\n"
        "    for i in range(0, 400, 10):\n"
        "        w.append(np.random.default_rng(i).random((10, 64, 32, 32), dtype=np.float32))\n")
    assert result.returncode == 1, result.stderr  # not -11: no SIGSEGV while closing the file
    assert f"no space left on device writing {out}" in result.stderr
    assert not out.exists() and _leftovers(small_disk) == []


def test_extraction_on_a_full_disk_fails_cleanly(small_disk):
    outputs = {"train": str(small_disk / "train.h5"), "test": str(small_disk / "test.h5")}
    result = _run_python(
        "from preimage import data\nfrom preimage.config import validate_config\n"
        "params = validate_config({'data': {'size': 96, 'train_per_class': 60, 'test_per_class': 2}})['data']\n"
        f"data.extract(params, {outputs!r})\n")
    assert result.returncode == 1, result.stderr
    assert re.search(f"no space left on device writing {small_disk}/(train|test).h5", result.stderr), result.stderr
    assert list(small_disk.iterdir()) == []


def test_checkpoint_on_a_full_disk_names_the_path_and_leaves_no_temporary(tiny, small_disk):
    checkpoint = small_disk / "checkpoints" / "hog" / "train.pt"
    with pytest.raises(atomic_files.NoSpaceLeft, match=f"no space left on device writing {checkpoint}"):
        _train(tiny, small_disk / "hog" / "decoder.pt", checkpoint, width=0.5, epochs=1)
    assert _leftovers(small_disk) == [] and not checkpoint.exists()


@pytest.mark.slow
def test_training_with_results_on_a_full_disk(tmp_path, small_disk):
    results = small_disk / "results"
    config = write_config(tmp_path / "c.yaml", {
        "results": str(results),
        "data": {"size": SIZE, "train_per_class": 4, "test_per_class": 2},
        "representations": ["hog"], "features": {"hog": {"cell_size": 8}},
        "decoder": {"width": 0.5}, "train": {"epochs": 1, "batch_size": 8, "device": "cpu"}})
    result = snakemake(tmp_path, f"{results}/hog/decoder.pt", configfile=config, check=False)
    assert result.returncode != 0
    assert "Segmentation fault" not in result.stderr and "SIGSEGV" not in result.stderr
    log = (results / "logs/train/hog.log").read_text()
    assert f"train failed: no space left on device writing {results}/checkpoints/hog/train.pt" in log
    assert _leftovers(results) == []


# --------------------------------------------------------------------------- 6. stale temporaries


def test_job_removes_stale_temporaries_of_its_own_outputs_only(tmp_path):
    out = tmp_path / "hog"
    out.mkdir()
    checkpoint = tmp_path / "checkpoints" / "train.pt"
    checkpoint.parent.mkdir()
    own = [out / ".decoder.pt.tmp-0123abcd", out / ".train_log.csv.tmp-89ab4567", checkpoint.with_name("train.pt.tmp")]
    others = [out / ".error.csv.tmp-0123abcd", tmp_path / "lbp" / ".decoder.pt.tmp-0123abcd", checkpoint]
    for path in own + others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    smk = FakeSnakemake(tmp_path / "logs/train.log", output=[out / "decoder.pt", out / "train_log.csv"],
                        checkpoint=checkpoint)
    with logs.job(smk):
        pass
    assert [p for p in own if p.exists()] == []
    assert all(p.exists() for p in others)
    assert "left by an interrupted run" in (tmp_path / "logs/train.log").read_text()


def test_training_removes_a_stale_checkpoint_temporary(tiny, tmp_path):
    checkpoint = tmp_path / "train.pt"
    stale = tmp_path / "train.pt.tmp"
    stale.write_bytes(b"half a checkpoint")
    _train(tiny, tmp_path / "decoder.pt", checkpoint, epochs=1)
    assert not stale.exists()


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_path(tmp_path / "x.h5") as tmp, hdf5.create_h5(tmp) as handle:
            handle.create_dataset("a", data=np.zeros(10))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 7. variants follow representations


@pytest.mark.slow
def test_hog_alone_schedules_no_alexnet_job(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"representations": ["hog"], "variants": {"autoencoder": ["fc6"],
                                                                                         "untrained_control": "always"}})
    planned = planned_jobs(tmp_path, "all", configfile=config)
    assert "train_autoencoder" not in planned and not [rule for rule in planned if rule.startswith("network_feature")]
    assert planned["shallow_features"] == 2 and planned["train"] == 1
    result = snakemake(tmp_path, "-n", "all", configfile=config)
    assert "variants.autoencoder skips fc6 (not in representations)" in result.stderr
