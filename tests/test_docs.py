"""The repository stands alone (no file points at a file not in it); its docs quote what the code prints."""

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


# What docs/troubleshooting.md quotes that other programs print (pydantic, MLflow, bash, a command).
NOT_OURS = (
    "Input should be",
    "input should be",
    "Registered Model with",
    "Could not find an",
    "bash: exec:",
    "mlflow ",
)
PLACEHOLDERS = {"NAME", "DIR", "N", "E", "S", "demo", "host", "runs", "nan"}  # (example values in the quotes)


def quoted_phrases(message: str) -> list[str]:
    """The runs of three or more plain words of a quoted message, where a word that is an
    example value (a number, a path, a name in quotes) or ends with ':' (where a message is
    composed of parts) ends a run."""
    phrases: list[str] = []
    words: list[str] = []
    for word in [*message.split(), "."]:
        plain = re.fullmatch(r"[A-Za-z][a-z']*[;,:]?", word) and word.rstrip(";,:") not in PLACEHOLDERS
        if plain:
            words.append(word.rstrip(":"))
        if not plain or word.endswith(":"):
            if len(words) >= 3:
                phrases.append(" ".join(words))
            words = []
    return phrases


def test_every_message_troubleshooting_quotes_is_one_the_code_can_print():
    """Each phrase of every message in the table's first column is in tune_lsd's code (its
    string literals joined, their {fields} blanked), so the page cannot quote a line the code
    no longer prints."""
    code = " ".join(
        path.read_text()
        for folder in ("tune_lsd", "trainables", "search_spaces")
        for path in (ROOT / folder).rglob("*.py")
    )
    code = re.sub(r"\{[^{}]*\}", " ", re.sub(r"\"\s*f?\"", "", " ".join(code.split())))
    code = " ".join(code.split())
    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    messages = [
        message
        for row in table.splitlines()
        if row.startswith("| `")
        for message in re.findall(r"`([^`]+)`", row.split(" | ")[0])
        if not message.startswith(NOT_OURS)
    ]
    assert len(messages) > 40
    missing = [
        (phrase, message)
        for message in messages
        for phrase in quoted_phrases(message)
        if not any(phrase.startswith(other) for other in NOT_OURS) and phrase not in code
    ]
    assert not missing
