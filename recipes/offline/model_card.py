"""Write docs/model_card.md from a finished offline run and the bundle made from it.

    python recipes/offline/model_card.py [RUN_DIR] [CARD]   # defaults: runs/offline, docs/model_card.md

Run after ``recipes/offline/bundle.py`` (which writes plugins/pretrained/bundle.json). Every
number on the card comes from the run and the bundle (audioembed/offline/model_card.py);
never edit the card by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audioembed.offline.model_card import CardError, write_card

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=REPO / "runs" / "offline")
    parser.add_argument("card", nargs="?", type=Path, default=REPO / "docs" / "model_card.md")
    parser.add_argument("--bundle", type=Path, default=REPO / "plugins" / "pretrained",
                        help="the bundle folder (default: plugins/pretrained)")
    args = parser.parse_args(argv)
    try:
        print(write_card(args.run_dir, args.bundle, args.card))
    except CardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
