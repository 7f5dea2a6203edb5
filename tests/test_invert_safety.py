"""``preimage invert`` against hostile or careless input: nothing is written outside its output
folder, a decoder file whose values are odd (a provenance naming files elsewhere, an unknown
representation, a network far larger than the tensors it holds) or that is no decoder at all ends
in one line naming it, and no message from loading a weights file suggests ``weights_only=False``.

The decoders here are built, not trained: a HOG decoder (31×4×4 features of 32-px images, as
:mod:`preimage.train` writes it) with seeded random weights, so every test runs in well under a
second after the first import."""
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from preimage import atomic_files, cli, decoding, image_store, invert, torch_files
from preimage.decoders import build_decoder
from preimage.decoding import NotADecoder, TrainedDecoder, WeightsMismatch, feature_provenance
from preimage.features import create
from preimage.features.cache import compute_cache

SIZE = 32
HOG = {"cell_size": 8}
FEATURES = (31, 4, 4)
WIDTH = 0.125



def write_decoder(path, provenance=None, state=None, **meta):
    """A HOG decoder as :mod:`preimage.train` writes it (``meta`` and ``provenance`` replace entries)."""
    torch.manual_seed(0)
    model = build_decoder("two_stream", FEATURES, SIZE, width=WIDTH)
    record = feature_provenance({"representation": "hog", "params": HOG, "identity": {}, "image_size": SIZE,
                                 "target_size": SIZE, "dtype": "float16"}, **(provenance or {}))
    values = {"representation": "hog", "kind": "two_stream", "feature_shape": list(FEATURES), "image_size": SIZE,
              "output_size": model.output_size, "width": WIDTH, "upsample": "deconv", "feature_scale": 0.5,
              "label": "hog", "provenance": record}
    values.update(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": values, "state_dict": model.state_dict() if state is None else state}, path)
    return path


def image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run_cli(capsys, *args):
    code = cli.main(["invert", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def one_line_error(code, err, *named):
    assert code == 1 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("preimage invert: error: "), err
    for text in named:
        assert str(text) in err, err


# --------------------------------------------------------------------------- nothing outside -o


def test_an_input_name_never_leads_outside_the_output_folder(tmp_path, capsys):
    # "#" in a file name once separated a feature cache from its row, for every input
    decoder = write_decoder(tmp_path / "hog/decoder.pt")
    (tmp_path / "src/dir#").mkdir(parents=True)
    image(tmp_path / "pwned/victim.png")
    out = tmp_path / "work/out"
    before = set(files_under(tmp_path))
    code, err = run_cli(capsys, "--decoder", decoder, tmp_path / "src/dir#/../../pwned/victim.png", "-o", out,
                        "--quiet", "--device", "cpu")
    assert code == 0, err
    written = set(files_under(tmp_path)) - before
    assert written == {"work/out/victim_hog.png", "work/out/sheet_hog.png"}


def test_names_with_hashes_keep_their_stem_beside_the_input(tmp_path):
    trained = TrainedDecoder(write_decoder(tmp_path / "d/decoder.pt"))
    inputs = [image(tmp_path / "in/a#b.png"), image(tmp_path / "in/a#b.jpg.png", seed=1)]
    result = invert.invert_images(trained, inputs, None, progress=False)
    assert result.outputs == [tmp_path / "in/a#b_d.png", tmp_path / "in/a#b.jpg_d.png"]
    assert result.sheet == tmp_path / "in/sheet_d.png"
    assert all(p.is_file() for p in result.outputs)


def test_feature_rows_are_named_by_the_cache_stem_and_row_only(tmp_path):
    images = tmp_path / "images.h5"
    with image_store.write_image_store(images, SIZE, ["c"], {}) as writer:
        pixels = np.random.default_rng(0).integers(0, 256, (3, 3, SIZE, SIZE), dtype=np.uint8)
        writer.append(pixels, [0, 0, 0], ["x", "y", "z"])
    (tmp_path / "c#").mkdir()
    cache = tmp_path / "rows.h5"
    compute_cache("hog", HOG, images, cache, device="cpu")
    trained = TrainedDecoder(write_decoder(tmp_path / "hog/decoder.pt"))
    out = tmp_path / "deep/er/out"
    before = set(files_under(tmp_path))
    # the cache named through a folder whose name holds "#" and "..": only its stem is used
    result = invert.invert_features(trained, tmp_path / "c#/../rows.h5", out, progress=False)
    assert [p.name for p in result.outputs] == ["rows_00000_hog.png", "rows_00001_hog.png", "rows_00002_hog.png"]
    assert result.names[0] == f"{tmp_path / 'c#/../rows.h5'}#00000"
    written = set(files_under(tmp_path)) - before
    assert written == {f"deep/er/out/{name}" for name in ("rows_00000_hog.png", "rows_00001_hog.png",
                                                          "rows_00002_hog.png", "sheet_hog.png")}


def test_every_written_path_is_checked_to_lie_in_its_folder(tmp_path):
    folder = tmp_path / "out"
    assert invert._confined(folder / "x_hog.png", folder) == folder / "x_hog.png"
    for escaping in (folder / "../x.png", folder / "sub/x.png", tmp_path / "x.png"):
        with pytest.raises(invert.InvertError, match="refusing to write .* it is not inside"):
            invert._confined(escaping, folder)


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    decoder = write_decoder(tmp_path / "hog/decoder.pt")
    source = image(tmp_path / "in/x.png")
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    for out in (existing, existing / "sub"):
        code, err = run_cli(capsys, "--decoder", decoder, source, "-o", out, "--quiet", "--device", "cpu")
        one_line_error(code, err, out, "exists and is not a folder")
    assert existing.read_text() == "keep me"


# --------------------------------------------------------------------------- odd decoder files


def test_a_missing_or_non_torch_decoder_is_one_line(tmp_path, capsys):
    source = image(tmp_path / "x.png")
    missing = tmp_path / "nope.pt"
    code, err = run_cli(capsys, "--decoder", missing, source, "-o", tmp_path / "out")
    one_line_error(code, err, f"cannot read decoder {missing}: no such file")
    text = tmp_path / "notes.txt"
    text.write_text("e\n" * 40)  # the weights-only unpickler once raised KeyError: 101 on this
    garbled = tmp_path / "garbled.pt"
    garbled.write_bytes(b"\x80\x02(e")  # a pickle's header, then IndexError inside the unpickler
    for path in (text, garbled, tmp_path):
        code, err = run_cli(capsys, "--decoder", path, source, "-o", tmp_path / "out")
        one_line_error(code, err, path)
    assert not (tmp_path / "out").exists()


def test_load_torch_names_any_file_it_cannot_read(tmp_path):
    # text (KeyError inside torch's unpickler), a password file (IndexError), a garbled pickle
    cases = {"notes.txt": b"e\n" * 40, "passwd": b"root:x:0:0:root:/root:/bin/bash\n",
             "garbled.pt": b"\x80\x02(e", "empty.pt": b""}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises((atomic_files.DamagedFile, torch_files.UnsafeFile), match=re.escape(str(path))):
            torch_files.load_torch(path)


@pytest.mark.parametrize("weights_file", ["/etc/passwd", "../outside/passwd", "sub/../../outside/passwd"])
def test_a_weights_file_outside_the_decoders_folder_is_never_read(tmp_path, capsys, weights_file):
    outside = tmp_path / "outside/passwd"
    outside.parent.mkdir()
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")  # torch's unpickler once failed on it with IndexError
    decoder = write_decoder(tmp_path / "conv/decoder.pt", {
        "representation": "torchvision:resnet18:layer1", "params": {"weights": "random", "seed": 0, "crop": SIZE},
        "weights": "0" * 64, "weights_file": weights_file})
    source = image(tmp_path / "x.png")
    code, err = run_cli(capsys, "--decoder", decoder, source, "-o", tmp_path / "out")
    one_line_error(code, err, decoder, f"records its weights file as {weights_file!r}, outside its folder: it is "
                                       "not read (--weights PATH says where they are)")
    # --weights names the file instead: compared by sha256 before it is loaded
    code, err = run_cli(capsys, "--decoder", decoder, source, "-o", tmp_path / "out", "--weights", outside)
    one_line_error(code, err, decoder, f"weights in use ({outside}) are sha256 {atomic_files.file_sha256(outside)[:16]}")


def test_a_weights_file_is_compared_by_sha256_before_it_is_loaded(tmp_path, capsys):
    folder = tmp_path / "conv2-ae"
    folder.mkdir()
    (folder / "encoder.pt").write_text("not the encoder\n")  # once read before its sha256 was compared
    decoder = write_decoder(folder / "decoder.pt", {
        "representation": "torchvision:resnet18:layer1", "params": {"weights": "random", "seed": 0, "crop": SIZE},
        "weights": "ab" * 32, "weights_file": "encoder.pt"})
    code, err = run_cli(capsys, "--decoder", decoder, image(tmp_path / "x.png"), "-o", tmp_path / "out")
    one_line_error(code, err, decoder, "computed with weights sha256 abababababababab", folder / "encoder.pt")
    with pytest.raises(WeightsMismatch):
        TrainedDecoder(decoder).representation()


def test_an_unknown_representation_is_one_line(tmp_path, capsys):
    decoder = write_decoder(tmp_path / "hog/decoder.pt", {"representation": "../../etc"})
    code, err = run_cli(capsys, "--decoder", decoder, image(tmp_path / "x.png"), "-o", tmp_path / "out")
    one_line_error(code, err, decoder, "unknown representation '../../etc'")
    decoder = write_decoder(tmp_path / "hog2/decoder.pt", {"params": {"cell_size": 8, "weights": "imagenet"}})
    code, err = run_cli(capsys, "--decoder", decoder, image(tmp_path / "x.png"), "-o", tmp_path / "out")
    one_line_error(code, err, decoder, "parameters for hog are invalid")


@pytest.mark.parametrize("entry", [
    {"image_size": 10 ** 6}, {"image_size": "32"}, {"target_size": 16}, {"feature_dtype": "S100000000"},
    {"params": {"weights": "random", "seed": 0, "crop": 10 ** 6}, "representation": "torchvision:resnet18:layer1"},
    {"params": ["cell_size", 8]}, {"version": "1; rm -rf"}, {"weights_file": "encoder.pt"},
])
def test_provenance_values_are_checked_before_they_are_used(tmp_path, entry):
    # image sizes and crops decide how large the images made for the representation are; none
    # may exceed the largest image side the workflow works at (data.size's maximum)
    trained = TrainedDecoder(write_decoder(tmp_path / "hog/decoder.pt", entry))
    with pytest.raises(NotADecoder, match=r"is not a preimage decoder \(its provenance is invalid: "):
        trained.provenance  # noqa: B018


class TooLarge(Exception):
    """A tensor of more values than the decoder file holds was about to be allocated."""


def test_the_file_never_decides_alone_how_much_memory_is_allocated(tmp_path, capsys, monkeypatch):
    # width 1000 asks for 1.8e13 parameters (74 TB); the file holds 66 thousand
    decoder = write_decoder(tmp_path / "hog/decoder.pt", width=1000)
    held = sum(t.numel() for t in torch.load(decoder, weights_only=True)["state_dict"].values())
    empty, requested = torch.empty, []

    def bounded_empty(*size, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        kwargs["device"] = torch.device(kwargs.get("device") or torch.get_default_device())  # as torch.device(…) does
        requested.append((kwargs["device"].type, math.prod(shape)))
        if kwargs["device"].type != "meta" and math.prod(shape) > held:
            raise TooLarge(f"{tuple(shape)} requested")
        return empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", bounded_empty)
    code, err = run_cli(capsys, "--decoder", decoder, image(tmp_path / "x.png"), "-o", tmp_path / "out")
    one_line_error(code, err, decoder, "its tensors are not those of the two_stream network its metadata describes",
                   "width 1000")
    assert any(device == "meta" and count > held for device, count in requested)  # described, never allocated


@pytest.mark.parametrize("entry", [
    {"width": float("inf")}, {"width": "wide"}, {"kind": "../../etc"}, {"feature_shape": [31, -4, 4]},
    {"feature_shape": [31, 2 ** 20, 2 ** 20]}, {"image_size": 2 ** 40}, {"upsample": "bicubic"},
    {"feature_scale": float("nan")}, {"output_size": 64},
])
def test_metadata_values_are_checked_before_the_network_is_built(tmp_path, entry):
    path = write_decoder(tmp_path / "decoder.pt", **entry)
    with pytest.raises(NotADecoder, match=re.escape(f"{path} is not a preimage decoder (")):
        decoding.load_decoder(path)


def test_tensors_that_are_not_the_decoders_are_named(tmp_path):
    state = dict(build_decoder("two_stream", FEATURES, SIZE, width=WIDTH).state_dict())
    state["extra.weight"] = torch.zeros(2)
    state["blocks.convA1.0.weight"] = torch.zeros(3, 31, 5, 5)
    path = write_decoder(tmp_path / "decoder.pt", state=state)
    with pytest.raises(NotADecoder, match=r"unexpected: extra\.weight; wrong shapes: blocks\.convA1\.0\.weight "
                                          r"\(3, 31, 5, 5\) \(expected \(32, 31, 5, 5\)\)"):
        decoding.load_decoder(path)


def test_a_valid_decoder_still_loads_exactly(tmp_path):
    path = write_decoder(tmp_path / "decoder.pt")
    model, meta = decoding.load_decoder(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert meta["width"] == WIDTH and set(model.state_dict()) == set(saved)
    for name, tensor in model.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, saved[name])


# --------------------------------------------------------------------------- never weights_only=False


UNSAFE_ADVICE = re.compile(r"weights_only\W*(=|set to)\W*False", re.IGNORECASE)


class Hostile:
    """Unpickling this would create a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("load", [
    lambda path: create("efficientnet_lite0:fc", weights=str(path)),
    lambda path: create("conv1", weights=str(path), arch="caffenet"),
    lambda path: create("torchvision:resnet18:layer1", weights=str(path)),
    lambda path: torch_files.load_torch(path),
], ids=["efficientnet_lite0", "caffenet", "torchvision", "load_torch"])
def test_weights_errors_never_suggest_weights_only_false(tmp_path, load):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    torch.save({"conv1.weight": Hostile(marker)}, path)
    with pytest.raises(torch_files.UnsafeFile) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "could run code" in message and "\n" not in message
    assert not UNSAFE_ADVICE.search(message) and "add_safe_globals" not in message
    assert not marker.exists()
