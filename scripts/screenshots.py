"""Write the README's pictures of the app, docs/images/*.svg, as the app itself renders them (Textual's
``export_screenshot``), driven by Pilot on the fixed workspace of the snapshot tests (tests/fixture_workspace.py).

    make screenshots            # or: python scripts/screenshots.py [--out docs/images]

The same bytes on every run: the workspace is built from rows with fixed times and ids in a fresh folder, the
terminal size, theme and colours are fixed, and nothing depends on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "images"

#: file name -> (what the picture shows, the scenario of tests/fixture_workspace.py, sample job still running)
PICTURES = {
    "paths.svg": ("the paths screen while sampling runs", "show_paths", True),
    "review.svg": ("the review screen, one question at a time", "show_review", False),
    "explorer.svg": ("the filter explorer", "show_explorer", False),
    "monitor.svg": ("the training monitor, two runs overlaid", "show_monitor", False),
    "results.svg": ("the results screen", "show_results", False),
}


async def picture(scenario: str, sampling: bool, folder: Path) -> str:
    import pytest

    from db.session import open_workspace
    from tests import fixture_workspace as fw

    with pytest.MonkeyPatch.context() as mp:
        fw.fixed_display(mp, folder)
        engine = open_workspace(folder / "workspace.db")
        try:
            workspace = fw.build_workspace(engine, sampling=sampling)
            app = fw.make_app(engine)
            async with app.run_test(size=fw.SIZE) as pilot:
                await getattr(fw, scenario)(pilot, workspace)
                svg = app.export_screenshot(title="sert-tui")
        finally:
            engine.dispose()
    return svg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write the SVGs to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (what, scenario, sampling) in PICTURES.items():
        with tempfile.TemporaryDirectory(prefix="sert-screens-") as tmp:
            svg = asyncio.run(picture(scenario, sampling, Path(tmp)))
        (args.out / name).write_text(svg, encoding="utf-8")
        print(f"wrote {args.out / name}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
