"""`python -m trainer.handwriting` (`make handwriting-data`): build data/handwriting/ from its sources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.handwriting.build import build
from trainer.handwriting.fetch import FetchError

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.handwriting",
        description="Render the handwriting set through the client's normaliser, into data/handwriting/.",
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default 0)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "data" / "handwriting", help="default data/handwriting"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "handwriting",
        help="fetched packages (default .cache/handwriting)",
    )
    args = parser.parse_args(argv)
    try:
        built = build(args.out, args.cache, args.seed)
    except (FetchError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = sum(built.counts.values())
    print(f"{total} samples from {len(built.counts)} sources -> {built.path} (sha256 {built.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
