"""Rewrite docs/results.md (and its plots in docs/results/) from a finished offline run.

    python recipes/offline/publish_results.py [RUN_DIR] [PAGE]   # defaults: runs/offline, docs/results.md

The page is generated from the run's stored page data (``RUN_DIR/report/page.json``, written
by the report stage), so it shows exactly the numbers of the run's own ``results.md``, with
image links relative to PAGE. Never edit the page by hand: the reading of the numbers is
docs/results_reading.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audioembed.offline.results import publish_results

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=REPO / "runs" / "offline")
    parser.add_argument("page", nargs="?", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args(argv)
    try:
        print(publish_results(args.run_dir, args.page))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
