"""The sources' files, fetched once by package name into a cache folder: npm packages by `npm pack`,
Debian packages by `apt-get download` and unpacked with `dpkg-deb -x` (never installed). Each source
yields the font files (or stroke fonts) it is rendered from, and the licence text it ships.
"""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from trainer.handwriting.sources import HERSHEYTEXT, Source


class FetchError(Exception):
    """A source's package could not be had: the command, and what it said."""


@dataclass(frozen=True)
class Fetched:
    files: tuple[Path, ...]  # font files (.woff2, .ttf, .otf) or, for ems:, the one SVG font
    licence_text: str  # the licence the package ships, for LICENSES.md


def fetch(source: Source, cache: Path) -> Fetched:
    """The files `source` is rendered from, fetched into `cache` unless already there."""
    if source.kind == "fontsource":
        package = _npm(source.package, cache)
        family = source.name.split(":", 1)[1]
        # The latin subset of every weight, upright: the digits live there.
        files = tuple(sorted((package / "files").glob(f"{family}-latin-[0-9]*-normal.woff2")))
        return Fetched(files, (package / "LICENSE").read_text(errors="replace"))
    if source.kind == "ems":
        package = _npm(HERSHEYTEXT, cache)
        font = package / "svg_fonts" / f"{source.name.split(':', 1)[1]}.svg"
        return Fetched((font,), _svg_metadata(font))
    if source.kind == "debian":
        name, _ = source.package.split("=", 1)
        root = debian_package(source.package, cache)
        files = tuple(
            sorted(p for p in (root / "usr" / "share" / "fonts").rglob("*") if p.suffix in {".ttf", ".otf"})
        )
        copyright_file = root / "usr" / "share" / "doc" / name / "copyright"
        return Fetched(files, copyright_file.read_text(errors="replace") if copyright_file.exists() else "")
    return Fetched((), "")


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command)}: {result.stderr.strip()[-500:]}")


def _npm(spec: str, cache: Path) -> Path:
    """An npm package (name@version), unpacked under cache/npm/."""
    folder = cache / "npm" / spec.replace("/", "+")
    if not (folder / "package").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _run(["npm", "pack", spec, "--silent", "--pack-destination", str(folder)], folder)
        (archive,) = folder.glob("*.tgz")
        with tarfile.open(archive) as packed:
            packed.extractall(folder, filter="data")
        archive.unlink()
    return folder / "package"


def debian_package(spec: str, cache: Path) -> Path:
    """A Debian package (name=version), its files unpacked under cache/debian/ (never installed)."""
    folder = cache / "debian" / spec.replace(":", "_").replace("=", "_")
    if not folder.is_dir():
        download = cache / "debian" / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", spec], download)
        name = spec.split("=", 1)[0]
        (deb,) = download.glob(f"{name}_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(folder)], download)
    return folder


def _svg_metadata(font: Path) -> str:
    """An SVG font's metadata block: its name, licence and designers."""
    text = font.read_text(errors="replace")
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[start + len("<metadata>") : end].strip() if start >= 0 else ""
