"""Benchmark: the whole upload path (CLI, normalisation, server, model) on digits that are not MNIST's.

    make bench-uploads     (or: .venv/bin/python bench/uploads.py [--model-base-path models/mnist])

Five evaluation sets, built here with fixed seeds and written as image files:
- typeset: the digits 0-9 in the 38 DejaVu and Liberation fonts (pinned Debian packages, unpacked
  into .cache/bench-fonts, never installed) and Pillow's own font, at odd
  sizes, offsets, slants, paper colours (light and dark boards) and noise levels, as PNG and JPEG;
- uci: the 1,797 digits of the UCI optical-recognition set (43 writers, none of them MNIST's;
  shipped inside scikit-learn), scaled up from 8x8 and written dark on paper of varying light and noise;
  a test set only: nothing trains on it;
- mnist-test: the first 1,000 of MNIST's test digits, and handwriting-dev: the handwriting set's dev
  sources (data/handwriting, never trained on), each written at four times its size on such paper;
- mnist-test-coarse: the next 1,000 of MNIST's test digits captured as the UCI set's were (a 32x32
  bitmap counted in 4x4 cells) and written as it is: what so coarse a capture costs, apart from who
  wrote the digits.
The files go through `python -m client predict --json FOLDER` against `python -m serving`
serving the model directory, so the figures include everything a user's folder goes through.
Writes bench/results/uploads.json and ends with one line: each set's accuracy and the CLI's images/s
(the whole run, start-up included; the seconds to its first answer are the start-up's share). Each
set's figures and most confident misses also go into the scored version's assets.extra/uploads.json,
which the dashboard's Evaluation page shows beside the trainer's own sources.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.machine import describe_machine  # noqa: E402
from client.normalise import normalise_bytes  # noqa: E402
from contract import model_dir  # noqa: E402
from trainer.data import load_handwriting, load_pair  # noqa: E402
from trainer.handwriting.fetch import debian_package  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "uploads.json"
# Each set as the Evaluation page names it, beside the trainer's "MNIST test" and "handwriting dev".
LABELS = {
    "typeset": "typeset digits",
    "uci": "UCI handwriting (a test set only)",
    "mnist-test": "MNIST test, first 1,000, on paper",
    "handwriting-dev": "handwriting dev, on paper",
    "mnist-test-coarse": "MNIST test, 1,000 more, captured as coarsely as UCI's",
}
# The typeset set's fonts: pinned Debian packages, unpacked (never installed) into .cache/, so every
# machine draws the same 38 fonts. It read whatever the machine had installed, and one without
# fonts-liberation drew 23 of them: 690 images, where the figures before had 1,170.
TYPESET_PACKAGES = ("fonts-dejavu-core=2.37-6", "fonts-dejavu-extra=2.37-6", "fonts-liberation=1:1.07.4-11")
FONT_CACHE = ROOT / ".cache" / "bench-fonts"


def fonts() -> dict[str, Path | None]:
    """The typeset fonts (None stands for Pillow's built-in font), in the order of their paths as
    installed, which is the order the figures before were drawn in."""
    found: list[tuple[str, Path]] = []
    for spec in TYPESET_PACKAGES:
        root = debian_package(spec, FONT_CACHE)
        found += [(str(path.relative_to(root)), path) for path in root.rglob("*.[ot]tf")]
    return {"pillow-default": None} | {path.stem: path for _, path in sorted(found)}


Colour = tuple[int, int, int]


def colour(rng: np.random.Generator, low: int, high: int) -> Colour:
    red, green, blue = (int(v) for v in rng.integers(low, high, 3))
    return red, green, blue


def paper_and_ink(rng: np.random.Generator) -> tuple[Colour, Colour]:
    if rng.random() < 0.2:  # a dark board with chalk
        return colour(rng, 20, 70), colour(rng, 200, 256)
    return colour(rng, 190, 256), colour(rng, 0, 90)


def finish(image: Image.Image, rng: np.random.Generator, out: Path) -> None:
    """Uneven light, sensor noise, and PNG or JPEG."""
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    slope = rng.uniform(-60, 60) * np.linspace(-0.5, 0.5, width)[None, :, None]
    noisy = pixels + slope + rng.normal(0, rng.uniform(0, 12), pixels.shape)
    result = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        result.save(out.with_suffix(".jpg"), quality=int(rng.integers(60, 95)))
    else:
        result.save(out.with_suffix(".png"))


def typeset_set(folder: Path, variants: int, rng: np.random.Generator) -> int:
    count = 0
    for name, path in fonts().items():
        for digit in range(10):
            for variant in range(variants):
                size = int(rng.integers(40, 220))
                font = (
                    ImageFont.load_default(size=size) if path is None else ImageFont.truetype(str(path), size)
                )
                paper, ink = paper_and_ink(rng)
                width, height = int(size * rng.uniform(1.5, 4)), int(size * rng.uniform(1.6, 3))
                page = Image.new("RGB", (width, height), paper)
                left, top, right, bottom = ImageDraw.Draw(page).textbbox((0, 0), str(digit), font=font)
                x = rng.uniform(0, max(1, width - (right - left))) - left
                y = rng.uniform(0, max(1, height - (bottom - top))) - top
                ImageDraw.Draw(page).text((x, y), str(digit), fill=ink, font=font)
                page = page.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor=paper)
                finish(page, rng, folder / f"typeset_{digit}_{name}_{variant}")
                count += 1
    return count


def stored_set(
    folder: Path, kind: str, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> int:
    """28x28 digits (ink 255) written onto paper four times their size, as a scan of them would be."""
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        ink = Image.fromarray(pixels).resize((112, 112), Image.Resampling.BICUBIC)
        paper, pen = paper_and_ink(rng)
        page = Image.new("RGB", (160, 160), paper)
        page.paste(Image.new("RGB", ink.size, pen), (24, 24), ink)
        finish(page, rng, folder / f"{kind}_{label}_{index}")
    return len(images)


def uci_set(folder: Path, rng: np.random.Generator) -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        finish(coarse_page(pixels, rng), rng, folder / f"uci_{label}_{index}")
    return len(digits.images)


def coarse_set(
    folder: Path, kind: str, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> int:
    """28x28 digits captured as coarsely as the UCI set's (`in_cells`), then written as it is: the
    same kind of capture from writers whose digits are known, so that what resolution alone costs is
    measured apart from the writers (the UCI set stays a test set: nothing is chosen by it)."""
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        finish(coarse_page(in_cells(pixels), rng), rng, folder / f"{kind}_{label}_{index}")
    return len(images)


def in_cells(pixels: np.ndarray) -> np.ndarray:
    """A digit (ink 255) as the UCI set's public description says its digits were captured: scaled to
    fill a 32x32 bitmap, thresholded, and counted in 4x4 cells, 8x8 counts of 0-16."""
    rows, cols = np.flatnonzero(pixels.max(axis=1)), np.flatnonzero(pixels.max(axis=0))
    crop = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = 32 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    bitmap = np.zeros((32, 32), dtype=np.uint8)
    top, left = (32 - size[1]) // 2, (32 - size[0]) // 2
    scaled = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    bitmap[top : top + size[1], left : left + size[0]] = scaled > 127
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))


def coarse_page(counts: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """8x8 counts of 0-16 scaled up 8-24 times, softened, and written on paper with a margin."""
    scale = int(rng.integers(8, 24))
    ink = (
        Image.fromarray((counts / 16 * 255).astype(np.uint8))
        .resize((8 * scale, 8 * scale), Image.Resampling.BICUBIC)
        .filter(ImageFilter.GaussianBlur(scale / 3))
    )
    paper, pen = paper_and_ink(rng)
    margin = int(rng.integers(0, 6 * scale))
    page = Image.new("RGB", (8 * scale + 2 * margin, 8 * scale + 2 * margin), paper)
    page.paste(Image.new("RGB", ink.size, pen), (margin, margin), ink)
    return page


def true_digit(answer: dict[str, Any]) -> int:
    return int(Path(answer["path"]).name.split("_")[1])


def source_report(answers: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """One set's accuracy, misses per true digit, and its most confident misses drawn as the model saw
    them (the client's normaliser run again on the file), for the Evaluation page."""
    mine = [a for a in answers if Path(a["path"]).name.startswith(kind + "_")]
    wrong = [a for a in mine if a.get("digit") != true_digit(a)]
    wrong_by_digit = collections.Counter(str(true_digit(a)) for a in wrong)
    drawn = sorted((a for a in wrong if "probabilities" in a), key=lambda a: -max(a["probabilities"]))
    return {
        "images": len(mine),
        "accuracy": round(1 - len(wrong) / max(1, len(mine)), 4),
        "errors": sum("error" in a for a in mine),
        "wrong_by_true_digit": dict(sorted(wrong_by_digit.items())),
        "misses": [
            {
                "file": Path(a["path"]).name,
                "label": true_digit(a),
                "predicted": a["digit"],
                "confidence": max(a["probabilities"]),
                "pixels": base64.b64encode(
                    normalise_bytes(Path(a["path"]).read_bytes()).image.tobytes()
                ).decode(),
            }
            for a in drawn[: model_dir.SOURCE_MISSES]
        ],
    }


def _without_misses(source: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in source.items() if key != "misses"}


def record_on_the_version(base_path: Path, answers: list[dict[str, Any]], sources: dict[str, Any]) -> None:
    """Writes the per-source figures, misses drawn, into the served version's assets.extra/uploads.json
    (atomically: the dashboard may be reading), where the Evaluation page shows them beside the
    trainer's own. Skipped, with a line saying why, when the answers came from several versions."""
    served = {a["version"] for a in answers if "version" in a}
    if len(served) != 1:
        print(f"not recorded on a version: the answers came from versions {sorted(served)}", file=sys.stderr)
        return
    target = model_dir.artefact_path(base_path, int(served.pop()), model_dir.UPLOADS)
    staged = target.with_name(f".{target.name}.partial")
    try:
        staged.write_text(json.dumps({"measured_on": time.strftime("%Y-%m-%d"), "sources": sources}))
        staged.replace(target)
    except OSError as error:
        print(f"not recorded on the version: {error}", file=sys.stderr)
        return
    print(f"recorded on the version: {target}", file=sys.stderr)


def start_server(base_path: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            f"--model_base_path={base_path}",
            "--model_name=mnist",
            "--host=127.0.0.1",
            "--port=18700",
            "--rest_api_port=18701",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            states = requests.get("http://127.0.0.1:18701/v1/models/mnist", timeout=1).json()
            if any(s["state"] == "AVAILABLE" for s in states.get("model_version_status", [])):
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"no model became AVAILABLE under {base_path}: train one first (make up)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-base-path", type=Path, default=ROOT / "models" / "mnist")
    parser.add_argument("--variants", type=int, default=3, help="renderings per font and digit (default 3)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        mnist = load_pair(ROOT / "data" / "mnist", "t10k", verify=False)
        dev = load_handwriting(ROOT / "data" / "handwriting" / "handwriting.npz").dev
        sizes = {
            "typeset": typeset_set(folder, args.variants, rng),
            "uci": uci_set(folder, rng),  # held out: a test set, never trained on
            "mnist-test": stored_set(folder, "mnist-test", mnist.images[:1000], mnist.labels[:1000], rng),
            "handwriting-dev": stored_set(folder, "handwriting-dev", dev.images, dev.labels, rng),
            "mnist-test-coarse": coarse_set(
                folder, "mnist-test-coarse", mnist.images[1000:2000], mnist.labels[1000:2000], rng
            ),
        }
        print(f"built {sizes} images in {folder}", file=sys.stderr)
        server = start_server(args.model_base_path)
        try:
            started = time.monotonic()
            cli = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "client",
                    "predict",
                    "--grpc",
                    "127.0.0.1:18700",
                    "--json",
                    str(folder),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert cli.stdout is not None
            lines = [next(cli.stdout, "")]
            first_answer = time.monotonic() - started  # start-up: imports (TensorFlow's, for gRPC)
            lines += cli.stdout
            _, errors = cli.communicate()
            seconds = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(30)
        if cli.returncode not in (0, 1):  # 1: some inputs failed, which the figures count
            raise SystemExit(f"the CLI exited with {cli.returncode}: {errors.strip()}")
        answers = [json.loads(line) for line in lines if line.strip()]
        sources = {kind: source_report(answers, kind) for kind in sizes}  # reads the files: in here
    report: dict[str, object] = {kind: _without_misses(source) for kind, source in sources.items()}
    accuracies = {kind: source["accuracy"] for kind, source in sources.items()}
    report["cli_images_per_s"] = round(len(answers) / seconds, 1)
    report["cli_seconds"] = round(seconds, 1)
    report["cli_seconds_to_first_answer"] = round(first_answer, 1)
    report["model_base_path"] = str(args.model_base_path)
    report["fonts"] = sorted(fonts())
    report["machine"] = describe_machine()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    record_on_the_version(args.model_base_path, answers, {LABELS[kind]: s for kind, s in sources.items()})
    print(
        ", ".join(f"{kind} {accuracy:.2%}" for kind, accuracy in accuracies.items())
        + f"; the CLI answered {len(answers):,} files at {report['cli_images_per_s']} images/s "
        f"({seconds:.1f} s, the first answer after {first_answer:.1f} s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
