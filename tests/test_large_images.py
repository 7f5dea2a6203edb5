"""Huge images: bounded decoding memory and the ``data.max_pixels`` budget (``preimage.data``).

The images are generated in ``tmp_path``: PNGs written row chunk by row chunk (a flat image
compresses to a few hundred kB, so a 12,000 x 12,000 one costs nothing to make but 432 MB to
decode) and a large JPEG. Peak memory is the growth of the peak resident set (``VmHWM``) of a
fresh Python process that decodes one file, so the test process' own allocations do not blur it
(``getrusage``'s peak would not do: Linux carries it over from the parent across ``exec``).
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preimage import data

MIB = 2**20


def write_flat_png(path: Path, width: int, height: int, value: int = 90) -> Path:
    """An 8-bit RGB PNG of one colour, made without holding its pixels: one band of rows is
    deflated once, ending in a full flush (so it refers to nothing before it), and repeated."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + bytes([value]) * (3 * width)  # filter type 0, then the pixels
    rows_per_band = max(1, 2**22 // len(row))
    band = row * min(rows_per_band, height)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the zlib wrapper is written here
    segment = packer.compress(band) + packer.flush(zlib.Z_FULL_FLUSH)
    bands, rest = divmod(height, rows_per_band)
    body = bytearray(b"\x78\xda")  # zlib header: deflate, 32 kB window
    checksum = 1
    for _ in range(bands):
        body += segment
        checksum = zlib.adler32(band, checksum)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    body += last.compress(row * rest) + last.flush()  # the final block
    body += struct.pack(">I", zlib.adler32(row * rest, checksum))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, RGB, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(body)) + chunk(b"IEND", b""))
    return path


def decode_in_fresh_process(path: Path, size: int, draft: bool = True) -> dict:
    """Decode ``path`` to ``size`` as the data stage does, in a new interpreter; returns the
    decoded (pre-resize) size, the output shape, or the refusal, and the peak RSS growth."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from PIL import Image
        from preimage import data

        def status(field):  # kB in /proc/self/status
            with open("/proc/self/status") as lines:
                return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

        Image.init()  # every format plugin imported before the baseline
        path, size, draft = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset the peak (VmHWM) to the current resident set
        except OSError:
            pass
        before = status("VmRSS")
        result = {}
        try:
            image = data.open_rgb(path, draft_size=size if draft else None)
            result["decoded"] = list(image.size)
            result["shape"] = list(data.resize_center_crop(image, size).shape)
        except data.BadImage as err:
            result["refused"] = str(err)
        result["growth"] = max(0, status("VmHWM") - before)
        print(json.dumps(result))
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(path), str(size), "1" if draft else "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc/self/status")
def test_png_decodes_with_one_copy_of_its_pixels(tmp_path):
    """A 5000 x 5000 RGB PNG made into a 32-px image: the decoded pixels are held once (Pillow
    keeps RGB at 4 bytes a pixel: 100 MB), not copied (8 bytes a pixel)."""
    width = height = 5000
    result = decode_in_fresh_process(write_flat_png(tmp_path / "big.png", width, height), 32)
    assert result["shape"] == [3, 32, 32]
    assert result["growth"] < 4.5 * width * height


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc/self/status")
def test_jpeg_is_decoded_at_reduced_scale(tmp_path):
    """A 4000 x 4000 JPEG made into a 32-px image is decoded at 1/8 scale (500 x 500, 0.75 MB),
    never at full size (48 MB)."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 4000), (40, 120, 200)).save(path, quality=80)
    result = decode_in_fresh_process(path, 32)
    assert result["decoded"] == [500, 500]
    assert result["shape"] == [3, 32, 32]
    assert result["growth"] < 12 * MIB
    full = decode_in_fresh_process(path, 32, draft=False)  # the same file without draft mode
    assert full["decoded"] == [4000, 4000] and full["growth"] > 40 * MIB


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns above 89.5 MP
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """12,000 x 12,000 pixels (144 MP, 432 MB decoded) in a ~0.4 MB PNG: refused from its
    header, above the default budget, with the size and the key in the message."""
    path = write_flat_png(tmp_path / "bomb.png", 12_000, 12_000)
    assert path.stat().st_size < 2 * MIB
    refusal = r"too large: 12000x12000 = 144,000,000 pixels > data.max_pixels 80,000,000"
    with pytest.raises(data.BadImage, match=refusal):
        data.open_rgb(path)
    with pytest.raises(data.BadImage, match="data.max_pixels"):
        data.load_file(path, 32)


def test_flat_png_is_a_valid_png(tmp_path):
    for width, height in ((7, 5), (700, 2000)):  # one band and a part; several bands and a part
        image = Image.open(write_flat_png(tmp_path / f"{width}.png", width, height, value=77))
        image.load()
        assert image.size == (width, height) and image.mode == "RGB"
        assert image.getextrema() == ((77, 77),) * 3


def test_budget_counts_width_times_height(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 60), (1, 2, 3)).save(path)
    assert data.load_file(path, 32, max_pixels=6000).shape == (3, 32, 32)  # exactly at the budget
    with pytest.raises(data.BadImage, match=r"100x60 = 6,000 pixels > data.max_pixels 5,999"):
        data.load_file(path, 32, max_pixels=5999)
    jpeg = tmp_path / "small.jpg"  # a JPEG is counted at its stored size, before draft mode
    Image.new("RGB", (800, 800), (1, 2, 3)).save(jpeg)
    with pytest.raises(data.BadImage, match=r"800x800"):
        data.load_file(jpeg, 32, max_pixels=100_000)


def test_extraction_skips_an_image_above_the_budget_and_names_it(tmp_path, caplog):
    """In a folder extraction a refused image is skipped like an unreadable one: named in the
    log and in the stores' ``skipped`` list, and the other images are extracted."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / f"{i}.png")
    write_flat_png(root / "huge.png", 400, 300)
    params = dict(source="folder", root=str(root), val_labels=None, size=16, seed=0, classes=None,
                  train_per_class="all", test_per_class=1, min_side=16, max_pixels=50_000,
                  extensions=list(data.IMAGE_EXTENSIONS), builtin={})
    out = {"train": tmp_path / "train.h5", "test": tmp_path / "test.h5"}
    with caplog.at_level(logging.WARNING, logger="preimage.data"):
        report = data.extract(params, out)
    assert sum(report.counts.values()) == 3
    assert len(report.skipped) == 1
    assert str(root / "huge.png") in report.skipped[0]
    assert "400x300 = 120,000 pixels > data.max_pixels" in report.skipped[0]
    assert str(root / "huge.png") in caplog.text and "data.max_pixels" in caplog.text


@pytest.mark.parametrize("mode,dtype,values", [
    ("I;16", np.uint16, np.arange(65536)),
    ("I", np.int32, np.arange(-70_000, 200_000)),  # 32-bit: clipped, peak 65535
    ("I", np.int32, np.arange(-300, 256)),  # maximum <= 255: peak 255
    ("F", np.float32, np.linspace(-10.0, 70_000.0, 100_001)),
])
def test_high_bit_depth_scales_to_8_bits_by_rounding(mode, dtype, values):
    """``round(v / peak * 255)`` clipped to [0, 255], as the float64 formula computes it, for
    every 16-bit value (integers are scaled in uint32 to save memory)."""
    array = values.astype(dtype)
    peak = 65535.0 if mode == "I;16" or array.max() > 255 else 255.0
    expected = np.clip(array.astype(np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(data._to_8bit(array, mode), expected)
