"""Writing a rendered bundle to its folder, and nothing else there.

The folder records what it was given (``.sluice-rendered``, the paths written), so a render
into it again removes what the previous one wrote and this one does not (a function taken out
of a pipeline must not stay in ``kubectl apply -f``'s view). A folder holding files that no
render wrote is refused rather than mixed with.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice.errors import SpecError

MARKER = ".sluice-rendered"


def write_bundle(files: dict[str, bytes], out: Path) -> list[Path]:
    """Write ``files`` (relative path -> bytes) under ``out``; returns the paths written."""
    previous = _previous(out)
    for path in files:
        if path.startswith("/") or ".." in Path(path).parts or path == MARKER:
            raise SpecError(f"{path}: a rendered file must stay inside the output folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(previous - files.keys()):
        target = out / stale
        target.unlink(missing_ok=True)
        for parent in target.parents:  # empty folders the stale file leaves
            if parent == out or any(parent.iterdir()):
                break
            parent.rmdir()
    written = []
    for path, data in sorted(files.items()):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    (out / MARKER).write_text(json.dumps(sorted(files), indent=0) + "\n")
    return written


def _previous(out: Path) -> set[str]:
    if not out.exists():
        return set()
    if not out.is_dir():
        raise SpecError(f"{out}: not a folder")
    marker = out / MARKER
    if marker.exists():
        try:
            return set(json.loads(marker.read_text()))
        except ValueError:
            raise SpecError(f"{marker}: not a list of rendered files; remove the folder and "
                            "render again") from None
    if any(out.iterdir()):
        raise SpecError(f"{out}: holds files sluice render did not write; render into an "
                        "empty or new folder")
    return set()
