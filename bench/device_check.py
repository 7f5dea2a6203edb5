"""One-command device check: what this machine's accelerator (or CPU) does with the project's work.

    bash bench/device_check.sh                    # on a machine with a GPU: the full check (about 5 min)
    bash bench/device_check.sh --quick            # tiny sizes and few steps: the check itself (under 1 min)
    bash bench/device_check.sh --output check.md  # the table also written to a file

Prints which device it measured, then one Markdown table:

* **cuda test**: the tests that skip without CUDA (found in ``tests/`` by their
  ``skipif(not torch.cuda.is_available())`` markers), run with pytest: passed, failed or skipped,
  and their seconds;
* **decoder**: training throughput (images/s, Adam steps on the pixel loss of eq. 1) of the
  paper's decoders of supplementary Tables 3-7 (HOG, SIFT, LBP, AlexNet conv5, AlexNet fc8; 256-px
  images, AlexNet's on its 227-px crop, width 1.0), in float32 and under bfloat16 autocast (as
  :mod:`preimage.train` runs on a GPU: the decoder's forward in autocast, the loss in float32),
  each with contiguous and with channels_last tensors;
* **extraction**: AlexNet (to fc8) and EfficientNet-Lite0 (to fc) feature extraction,
  ``create(...).compute`` on 256-px images (crop, normalisation and forward), images/s;
* **gan step**: training steps of an AlexNet fc6 decoder with the three losses of Appendix A
  (pixel; feature; feature + adversarial, with its discriminator step), as ``bench/bench_gan.py``;
* **streaming**: training pairs per second that the streamed HDF5 reader (``preimage.streaming``
  through ``train.PairedData``) delivers into device memory from a synthetic HOG cache at 256 px.

Every throughput row also gives the TFLOP/s it achieves (its FLOPs per image counted with
``torch.utils.flop_counter`` as ``bench/estimate_paper_cost.py`` counts them) and that rate as a
multiple of the sustained throughputs the estimate assumes (``ASSUMED_TFLOPS``): above 1× a job
runs faster than the estimate's GPU-hours say. For the streaming row the multiple is the streamed
rate over the HOG decoder's demand (images/s) at those throughputs: above 1× the reader keeps up.

``--quick`` runs every row with tiny sizes (32-px images, width 1/16, a few steps): the whole check
on a CPU in under a minute (bfloat16 autocast runs on the CPU too). Timings use random weights
(``weights: random``; speed does not depend on the values), so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench_decoders import feature_shapes  # bench/ is on sys.path when run as a script
from bench_streaming import hog_shape, synthetic_stores
from estimate_paper_cost import ASSUMED_TFLOPS, CROP, flops
from preimage import train
from preimage.decoders import build_decoder
from preimage.features import create, lookup

ROOT = Path(__file__).resolve().parents[1]
#: The paper decoders of supplementary Tables 3-7, by the representation whose features they invert.
PAPER_DECODERS = ("hog", "sift", "lbp", "conv5", "fc8")
PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")
GAN_LOSSES = ("pixel", "feature", "gan")
COLUMNS = ("check", "configuration", "result", "value", "unit", "TFLOP/s",
           "× estimate " + " / ".join(f"{t:g}" for t in ASSUMED_TFLOPS) + " TFLOP/s")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big and how long each measurement is."""

    size: int  #: image side of the decoders, extraction and streaming (the paper: 256)
    width: float  #: decoder width (the paper: 1.0)
    batch: int  #: training batch (the paper: 64)
    warmup: int  #: untimed steps before the timed ones
    steps: int  #: timed steps (median over them)
    extract_batch: int
    alexnet_crop: int  #: AlexNet's crop (the paper: 227)
    efficientnet_crop: int  #: EfficientNet-Lite0's crop (224)
    gan_batch: int
    stream_images: int
    stream_batch: int
    budget_s: float  #: rows that would start after this many seconds are reported as skipped


FULL = Sizes(size=256, width=1.0, batch=64, warmup=3, steps=10, extract_batch=128, alexnet_crop=CROP,
             efficientnet_crop=224, gan_batch=64, stream_images=2048, stream_batch=64, budget_s=420.0)
QUICK = Sizes(size=32, width=1 / 16, batch=4, warmup=1, steps=2, extract_batch=4, alexnet_crop=64,
              efficientnet_crop=64, gan_batch=4, stream_images=96, stream_batch=8, budget_s=240.0)


@dataclasses.dataclass
class Row:
    check: str
    configuration: str
    result: str
    value: float
    unit: str
    flops_per_item: Optional[float] = None  #: FLOPs per image (per pair for streaming: the demand's)
    ratio_note: Optional[str] = None  #: the last column when it is not achieved / assumed

    def cells(self) -> List[str]:
        value = "nan" if math.isnan(self.value) else (f"{self.value:.3g}" if self.value < 100 else f"{self.value:.0f}")
        achieved, ratio = "–", "–"
        if self.flops_per_item is not None and not math.isnan(self.value):
            tflops = self.value * self.flops_per_item / 1e12
            achieved = f"{tflops:.3g}"
            ratio = " / ".join(f"{tflops / t:.2g}×" for t in ASSUMED_TFLOPS)
        if self.ratio_note is not None:
            achieved, ratio = "–", self.ratio_note
        return [self.check, self.configuration, self.result, value, self.unit, achieved, ratio]


def markdown(rows: List[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---|---:|---|---:|---:|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"GPU {props.name} ({props.total_memory / 2 ** 30:.0f} GiB, {torch.cuda.device_count()} visible), "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return (f"CPU only (no CUDA device visible): {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; these are CPU figures, not a GPU's")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], None], items: int, warmup: int, steps: int, device: torch.device) -> float:
    """Items per second of ``fn`` (``items`` per call): the median over ``steps`` timed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


# --------------------------------------------------------------------------- rows


def cuda_tests(root: Path = ROOT) -> List[str]:
    """pytest node ids of the tests that skip without CUDA (a ``skipif(not ....cuda.is_available())``,
    on the function, its class or the module's ``pytestmark``; a test that skips *with* CUDA, as a
    check of what happens without a GPU does, is not one of them)."""

    def skips_without_cuda(node) -> bool:
        condition = node.args[0] if isinstance(node, ast.Call) and node.args else None
        return (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("skipif")
                and isinstance(condition, ast.UnaryOp) and isinstance(condition.op, ast.Not)
                and ast.unparse(condition.operand).endswith("cuda.is_available()"))

    def needs_cuda(decorators) -> bool:
        return any(skips_without_cuda(node) for d in decorators for node in ast.walk(d))

    ids = []
    for path in sorted((root / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_wide = any(isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
                          and needs_cuda([node.value]) for node in tree.body)
        name = path.relative_to(root).as_posix()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if module_wide or needs_cuda(node.decorator_list):
                    ids.append(f"{name}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test") and (
                            module_wide or needs_cuda(node.decorator_list) or needs_cuda(item.decorator_list)):
                        ids.append(f"{name}::{node.name}::{item.name}")
    return ids


def run_cuda_tests(ids: List[str], timeout_s: float) -> List[Row]:
    """Run ``ids`` in one pytest process; one row per test with its outcome and seconds."""
    if not ids:
        return [Row("cuda test", "(none found in tests/)", "none", 0.0, "s")]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "cuda.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                   f"--junitxml={report}", *ids]
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [Row("cuda test", test, f"error: no result in {timeout_s:.0f} s", math.nan, "s") for test in ids]
        if not report.exists():
            tail = " ".join((done.stdout + done.stderr).strip().splitlines()[-1:])
            return [Row("cuda test", test, f"error: pytest exited {done.returncode} ({tail})", math.nan, "s")
                    for test in ids]
        cases = {}
        for case in ElementTree.parse(report).iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    message = (child.get("message") or "").splitlines()[0][:80] if child.get("message") else ""
                    outcome += f" ({message})" if message and child.tag == "skipped" else ""
            cases[case.get("name")] = (outcome, float(case.get("time", "nan")))
    rows = []
    for test in ids:
        outcome, seconds = cases.get(test.rsplit("::", 1)[-1], ("error: not run", math.nan))
        rows.append(Row("cuda test", test, outcome, seconds, "s"))
    return rows


def decoder_target(rep: str, size: int, alexnet_crop: int) -> int:
    """The image side a decoder of ``rep`` reconstructs: AlexNet's decoders their crop (Table 1)."""
    return min(size, alexnet_crop) if lookup(rep).family == "alexnet" else size


def decoder_step_flops(kind: str, shape: tuple, target: int, width: float) -> float:
    """FLOPs per image of one training step (forward and backward), counted on the meta device."""
    with torch.device("meta"):
        model = build_decoder(kind, shape, target, width=width)
        x = torch.randn(2, *shape)
        y = torch.rand(2, 3, model.output_size, model.output_size)
        return flops(lambda: F.mse_loss(model(x), y).backward()) / 2


def decoder_rows(sizes: Sizes, device: torch.device, deadline: float) -> List[Row]:
    rows = []
    shapes = feature_shapes(sizes.size)
    for rep in PAPER_DECODERS:
        shape = shapes[rep]
        target = decoder_target(rep, sizes.size, sizes.alexnet_crop)
        kind = lookup(rep).decoder_kind(shape)
        per_image = decoder_step_flops(kind, shape, target, sizes.width)
        for precision in PRECISIONS:
            for layout in LAYOUTS:
                config = (f"{rep} ({kind}, {target} px, width {sizes.width:g}, batch {sizes.batch}), {precision}, "
                          f"{layout}")
                if time.perf_counter() > deadline:
                    rows.append(Row("decoder", config, "skipped: time budget", math.nan, "img/s"))
                    continue
                try:
                    value = decoder_rate(kind, shape, target, sizes, precision, layout, device)
                    rows.append(Row("decoder", config, "ok", value, "img/s", per_image))
                except RuntimeError as err:  # e.g. bfloat16 autocast this device does not support
                    rows.append(Row("decoder", config, f"error: {str(err).splitlines()[0][:80]}", math.nan, "img/s"))
    return rows


def decoder_rate(kind: str, shape: tuple, target: int, sizes: Sizes, precision: str, layout: str,
                 device: torch.device) -> float:
    torch.manual_seed(0)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = build_decoder(kind, shape, target, width=sizes.width).to(device, memory_format=memory_format)
    x = torch.randn(sizes.batch, *shape, device=device)
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.rand(sizes.batch, 3, model.output_size, model.output_size, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
            prediction = model(x)
        loss = F.mse_loss(prediction.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    return rate(step, sizes.batch, sizes.warmup, sizes.steps, device)


def test_images(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Seeded smooth random images in [0, 1] (speed does not depend on the content)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, max(1, size // 8), max(1, size // 8), generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).to(device)


def extraction_rows(sizes: Sizes, device: torch.device, deadline: float) -> List[Row]:
    rows = []
    networks = [("AlexNet", "fc8", sizes.alexnet_crop), ("EfficientNet-Lite0", "efficientnet_lite0:fc",
                                                          sizes.efficientnet_crop)]
    for label, name, crop in networks:
        config = f"{label} `{name}`, {sizes.size}-px images, crop {crop}, batch {sizes.extract_batch}, fp32"
        if time.perf_counter() > deadline:
            rows.append(Row("extraction", config, "skipped: time budget", math.nan, "img/s"))
            continue
        rep = create(name, weights="random", crop=crop).to(device)
        images = test_images(sizes.extract_batch, sizes.size, device)
        with torch.no_grad():
            per_image = flops(lambda: rep.compute(images[:2])) / 2
            value = rate(lambda: rep.compute(images), sizes.extract_batch, sizes.warmup, sizes.steps, device)
        rows.append(Row("extraction", config, "ok", value, "img/s", per_image))
    return rows


def gan_rows(sizes: Sizes, device: torch.device, deadline: float) -> List[Row]:
    """Decoder training steps with Appendix A's losses on AlexNet fc6, as :mod:`preimage.train` runs them."""
    from preimage.objectives import PixelObjective, build_objective

    name, params = "fc6", {"weights": "random", "crop": sizes.alexnet_crop}
    use_amp = device.type == "cuda"
    configs = {kind: (f"fc6 decoder, {kind} loss, crop {sizes.alexnet_crop}, width {sizes.width:g}, batch "
                      f"{sizes.gan_batch}" + (", bf16 autocast" if use_amp else ", fp32")) for kind in GAN_LOSSES}
    if time.perf_counter() > deadline:
        return [Row("gan step", config, "skipped: time budget", math.nan, "img/s") for config in configs.values()]
    representation = create(name, **params).to(device)
    image_side = min(sizes.size, sizes.alexnet_crop)
    images = test_images(sizes.gan_batch, image_side, device)
    with torch.no_grad():
        features = representation(images)
    scale = 1.0 / float(features.pow(2).mean().sqrt())
    shape = tuple(features.shape[1:])
    image_size = representation.target_size(image_side)
    rows = []
    for kind, config in configs.items():
        if time.perf_counter() > deadline:
            rows.append(Row("gan step", config, "skipped: time budget", math.nan, "img/s"))
            continue
        torch.manual_seed(0)
        model = build_decoder(lookup(name).decoder_kind(shape), shape, image_size, width=sizes.width).to(device)
        loss = {"kind": kind, "representation": {"name": name, "params": params}}
        objective = build_objective(loss, image_size=image_size, output_size=model.output_size, feature_scale=scale,
                                    width=sizes.width, lr=1e-4, betas=(0.9, 0.999), device=device,
                                    use_amp=use_amp) or PixelObjective()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        targets = F.interpolate(images, size=model.output_size, mode="bilinear", antialias=True)
        z = features * scale

        def step(n: int = sizes.gan_batch) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                prediction = model(z[:n])
            terms = objective(prediction.float(), targets[:n], z[:n])
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()

        per_image = flops(lambda: step(2)) / 2
        value = rate(step, sizes.gan_batch, sizes.warmup, sizes.steps, device)
        rows.append(Row("gan step", config, "ok", value, "img/s", per_image))
    return rows


def streaming_row(sizes: Sizes, device: torch.device, deadline: float, workdir: Optional[str]) -> Row:
    """Pairs per second from the streamed reader into device memory, against the HOG decoder's
    demand at the estimate's throughputs."""
    shape = hog_shape(sizes.size)
    per_pair = 2 * int(np.prod(shape)) + 3 * sizes.size ** 2  # as streamed: float16 features, uint8 image
    stream_mb = per_pair * sizes.stream_images / 4 / 2 ** 20  # a quarter of the data: it cannot preload
    config = (f"HOG cache {shape[0]}×{shape[1]}×{shape[2]} float16 + {sizes.size}-px images, "
              f"{sizes.stream_images} pairs, batch {sizes.stream_batch}, preload_mb {stream_mb:.3g}")
    if time.perf_counter() > deadline:
        return Row("streaming", config, "skipped: time budget", math.nan, "pairs/s")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        images_path, features_path = synthetic_stores(Path(tmp), sizes.stream_images, sizes.size)
        data = train.PairedData(str(features_path), str(images_path), np.arange(sizes.stream_images),
                                preload_mb=stream_mb)
        if data.in_memory:
            raise RuntimeError(f"streaming: {sizes.stream_images} pairs fit in preload_mb {stream_mb}; nothing streamed")
        try:
            start, seen = time.perf_counter(), 0
            for f, x in data.batches(sizes.stream_batch, np.random.default_rng(0)):
                torch.from_numpy(f).to(device, non_blocking=True)
                train.to_targets(x, sizes.size, device)
                seen += len(f)
            synchronize(device)
            value = seen / (time.perf_counter() - start)
        finally:
            data.close()
    shapes = feature_shapes(sizes.size)
    demand_flops = decoder_step_flops(lookup("hog").decoder_kind(shapes["hog"]), shapes["hog"], sizes.size, sizes.width)
    ratios = " / ".join(f"{value / (t * 1e12 / demand_flops):.2g}×" for t in ASSUMED_TFLOPS)
    return Row("streaming", config + f", {value * per_pair / 2 ** 20:.0f} MB/s", "ok", value, "pairs/s",
               ratio_note=f"{ratios} of the HOG decoder's demand")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a CPU check of the check)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible) | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--budget-s", type=float, help="report rows that would start later as skipped "
                        "(default: 420 s, the check fits one 8-minute call; 240 s with --quick)")
    parser.add_argument("--workdir", help="folder for the streaming check's synthetic stores (default: a temporary one)")
    parser.add_argument("--output", help="also write the table (with its header lines) to this Markdown file")
    args = parser.parse_args(argv)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    if args.threads:
        torch.set_num_threads(args.threads)
    from preimage.devices import resolve_device

    device = resolve_device(args.device)
    deadline = started + sizes.budget_s
    header = [f"device check{' --quick' if args.quick else ''}: measured on {device} — {describe_device(device)}",
              f"sizes: {sizes.size}-px images, decoder width {sizes.width:g}, batch {sizes.batch}, median of "
              f"{sizes.steps} timed steps after {sizes.warmup}; the estimate (bench/estimate_paper_cost.py) assumes "
              + " and ".join(f"{t:g}" for t in ASSUMED_TFLOPS) + " TFLOP/s sustained"]
    print("\n".join(header) + "\n", flush=True)
    sections = [
        ("cuda test", lambda: run_cuda_tests(cuda_tests(), timeout_s=max(30.0, min(180.0, deadline - time.perf_counter())))),
        ("decoder", lambda: decoder_rows(sizes, device, deadline)),
        ("extraction", lambda: extraction_rows(sizes, device, deadline)),
        ("gan step", lambda: gan_rows(sizes, device, deadline)),
        ("streaming", lambda: [streaming_row(sizes, device, deadline, args.workdir)]),
    ]
    rows: List[Row] = []
    for check, measure in sections:
        try:
            rows += measure()
        except Exception as err:  # noqa: BLE001 - one failed section must not hide the others' rows
            message = " ".join(str(err).split())[:120]
            rows.append(Row(check, "(the whole section)", f"error: {type(err).__name__}: {message}", math.nan, ""))
    table = markdown(rows)
    footer = f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s on {device}\n"
    print(table + footer, end="")
    if args.output:
        Path(args.output).write_text("\n".join(header) + "\n\n" + table + footer)
    failed = [row for row in rows if row.result.startswith(("error", "failed"))]
    return 1 if failed else 0  # the table shows every row either way; the status says whether all of them ran


if __name__ == "__main__":
    sys.exit(main())
