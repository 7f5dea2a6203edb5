"""Peak memory of decoding one huge image to a small one, as the data stage does (``preimage.data``).

Each file is decoded in a fresh Python process (``open_rgb`` with JPEG draft mode, then
``resize_center_crop``) and the growth of that process' peak resident set (``VmHWM``) is
reported, also per decoded pixel. Files are generated in a temporary folder:
flat-colour PNGs (streamed, a few hundred kB each), a JPEG, and a 12,000 x 12,000 PNG above the
default ``data.max_pixels`` budget, which must be refused before decoding; then one image of each
colour mode that is converted to RGB (grey, palette, RGBA, 16-bit, CMYK JPEG)::

    python bench/bench_decode_memory.py            # 32-px output, as the issue's probe
    python bench/bench_decode_memory.py --size 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_large_images import decode_in_fresh_process, write_flat_png  # noqa: E402  (one copy of the helpers)

MIB = 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="output side (default 32)")
    args = parser.parse_args(argv)
    from PIL import Image

    print(f"decode to {args.size} px in a fresh process; peak RSS growth (VmHWM - VmRSS before)")
    print()
    print("| file | stored | decoded | peak growth MiB | bytes / decoded pixel |")
    print("|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        files = [write_flat_png(Path(folder) / f"flat{side}.png", side, side) for side in (6000, 8000)]
        jpeg = Path(folder) / "flat8000.jpg"
        Image.new("RGB", (8000, 8000), (40, 120, 200)).save(jpeg, quality=90)
        files += [jpeg, write_flat_png(Path(folder) / "bomb12000.png", 12_000, 12_000)]
        for path in files:
            with Image.open(path) as image:
                stored = image.size
            result = decode_in_fresh_process(path, args.size)
            growth = result["growth"] / MIB
            if "refused" in result:
                print(f"| {path.name} ({path.stat().st_size / MIB:.1f} MiB) | {stored[0]}x{stored[1]} | refused: "
                      f"{result['refused']} | {growth:.0f} | - |")
                continue
            width, height = result["decoded"]
            print(f"| {path.name} | {stored[0]}x{stored[1]} | {width}x{height} | {growth:.0f} | "
                  f"{result['growth'] / (width * height):.1f} |")
        print()
        print(f"peak growth per stored pixel by colour mode, {MODES_SIDE} x {MODES_SIDE} images (Pillow keeps RGB "
              "at 4 bytes a pixel)")
        print()
        print("| file | mode | bytes / pixel |")
        print("|---|---|---:|")
        for name, image in mode_images(MODES_SIDE).items():
            path = Path(folder) / name
            image.save(path)
            result = decode_in_fresh_process(path, args.size)
            print(f"| {name} | {image.mode} | {result['growth'] / MODES_SIDE**2:.1f} |")
    return 0


MODES_SIDE = 3000


def mode_images(side: int) -> dict:
    """Grey ramps of ``side`` x ``side`` in the colour modes that decode through a conversion."""
    from PIL import Image

    ramp = np.broadcast_to(np.arange(side, dtype=np.uint16)[None, :], (side, side))
    grey = Image.fromarray((ramp % 256).astype(np.uint8))
    rgb = Image.merge("RGB", (grey,) * 3)
    return {
        "rgb.png": rgb,
        "grey.png": grey,
        "palette.png": grey.convert("P"),
        "rgba.png": Image.merge("RGBA", (grey,) * 4),
        "grey16.png": Image.fromarray(ramp * 20),
        "cmyk.jpg": rgb.convert("CMYK"),
    }


if __name__ == "__main__":
    sys.exit(main())
