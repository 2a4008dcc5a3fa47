"""Write the service's OpenAPI document to openapi/openapi.json, or check it is current.

`python -m app.openapi` regenerates the file; `python -m app.openapi --check`
exits 1 when the checked-in file differs from what the app would generate (CI).
Keys are sorted and indented so that the file diffs well in review.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def render_openapi() -> str:
    """The app's OpenAPI document as stable, diffable JSON text."""
    from app.main import create_app

    spec = create_app().openapi()
    return json.dumps(spec, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.openapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    args = parser.parse_args(argv)

    rendered = render_openapi()
    path: Path = args.path
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != rendered:
            state = "is missing" if current is None else "differs from what the app generates"
            print(
                f"{path} {state}. "
                "Run `python -m app.openapi` (or `make openapi`) and commit the result.",
                file=sys.stderr,
            )
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
