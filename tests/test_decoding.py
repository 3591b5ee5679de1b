"""tune_lsd/data/decoding.py: the literature's geometry (shorter side -> S, centre square), draft
decoding of large JPEGs, progress lines, missing files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tune_lsd.data import decoding
from tune_lsd.data.decoding import MissingImageError, UnreadableImageError, centre_square, decode_all, decode_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def wide_test_image(height: int = 100) -> np.ndarray:
    """3:1 wide: a red left third and a blue right third (what squashing would keep and the
    centre crop must drop), a green centre square holding a white square of half its side."""
    image = np.zeros((height, 3 * height, 3), np.uint8)
    image[:, :height] = RED
    image[:, 2 * height :] = BLUE
    image[:, height : 2 * height] = GREEN
    quarter = height // 4
    image[quarter : height - quarter, height + quarter : 2 * height - quarter] = WHITE
    return image


def colour_share(pixels: np.ndarray, colour: tuple[int, int, int]) -> float:
    return float(np.mean(np.all(np.abs(pixels.astype(int) - colour) < 40, axis=-1)))


@pytest.mark.parametrize("transpose", [False, True], ids=["wide", "tall"])
def test_stored_pixels_are_the_centre_square_not_a_squash(tmp_path, transpose):
    pattern = wide_test_image()
    if transpose:
        pattern = pattern.transpose(1, 0, 2).copy()
    path = tmp_path / "image.png"
    Image.fromarray(pattern).save(path)

    stored = decode_image(path, 40)

    assert stored.shape == (40, 40, 3) and stored.dtype == np.uint8
    assert colour_share(stored, RED) == 0 and colour_share(stored, BLUE) == 0  # the edges are cropped away
    # The white square keeps its shape and place: half the side, centred (squashing to a
    # square would make it a third as wide as tall and keep the red and blue thirds).
    white = np.argwhere(np.all(stored > 200, axis=-1))
    (top, left), (bottom, right) = white.min(axis=0), white.max(axis=0)
    assert (bottom - top + 1, right - left + 1) == (20, 20)
    assert (top, left) == (10, 10)
    assert colour_share(stored, GREEN) == pytest.approx(1 - 0.25, abs=0.05)


def test_centre_square_box():
    assert centre_square(300, 100) == (100, 0, 200, 100)
    assert centre_square(100, 300) == (0, 100, 100, 200)
    assert centre_square(64, 64) == (0, 0, 64, 64)


def test_large_jpegs_decode_in_draft_mode_close_to_a_full_decode(tmp_path):
    """A 1600 x 1200 JPEG stored at 100 px: the DCT-scaled decode (1/4 here, >= 2 x 100 px
    left) is within a few grey levels of decoding every pixel."""
    rows, cols = np.mgrid[0:1200, 0:1600]
    smooth = np.stack(
        [128 + 100 * np.sin(cols / 90), 128 + 100 * np.cos(rows / 70), (rows + cols) % 256], axis=-1
    ).astype(np.uint8)
    path = tmp_path / "large.jpg"
    Image.fromarray(smooth).save(path, quality=92)
    with Image.open(path) as image:
        image.draft("RGB", (200, 200))
        assert image.size == (400, 300)  # the reduced scale really is used

    drafted = decode_image(path, 100).astype(int)
    full = decode_image(path, 100, draft=False).astype(int)

    assert np.abs(drafted - full).mean() < 2.0
    assert np.abs(drafted - full).max() < 40


def test_decode_all_reports_progress_and_keeps_the_order(tmp_path, monkeypatch):
    files = []
    for value in range(6):
        files.append(tmp_path / f"{value}.png")
        Image.fromarray(np.full((8, 12, 3), 40 * value, np.uint8)).save(files[-1])
    monkeypatch.setattr(decoding, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []

    images = decode_all(files, 4, "six", log=lines.append)

    assert [int(image.mean()) for image in images] == [40 * value for value in range(6)]
    assert lines and all(line.startswith("six: decoded ") and "/6 images" in line for line in lines)


def test_a_missing_image_is_named(tmp_path):
    with pytest.raises(MissingImageError, match="missing: .*gone.jpg"):
        decode_all([tmp_path / "gone.jpg"], 8)


def test_a_file_that_is_no_image_is_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a JPEG at all")

    with pytest.raises(UnreadableImageError, match=r"cannot be decoded: .*broken.jpg \(cannot identify image file"):
        decode_all([tmp_path / "broken.jpg"], 8)


def test_decoding_uses_every_usable_core():
    import os

    assert decoding.usable_cores() == len(os.sched_getaffinity(0))
