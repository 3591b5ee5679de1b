"""The repository stands alone: no file of it points at a file that is not in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POINTERS = re.compile(r"DESIGN\.md|\.\./shared|shared notes|notes/(?:stack|data|gpu|layout|scale)\.md")


def test_no_file_points_at_a_file_outside_the_repository():
    """Design notes, shared folders and the like exist where the repository was written, not
    where it is read: a pointer to one is a dead end for a user."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in listed.splitlines() if name.endswith((".py", ".md", ".toml", ".txt", ".yaml"))]
    offending = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        if path != Path(__file__) and path.is_file()
        for match in POINTERS.finditer(path.read_text())
    ]
    assert not offending
