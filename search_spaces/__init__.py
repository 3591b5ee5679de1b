"""Search spaces and base configs shipped as YAML package data."""

from pathlib import Path

SPACE_DIR = Path(__file__).parent
CONFIG_DIR = SPACE_DIR / "configs"
