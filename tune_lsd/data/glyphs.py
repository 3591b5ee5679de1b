"""CJK glyph dataset: class = character, instance = font.

Glyphs are rendered from Debian's CJK font packages (``make fonts`` installs them). A small
pre-rendered sample ships with the package (``bundled/glyphs32.npz``) so tests and the demo
need no fonts; ``make glyphs`` regenerates it bit-for-bit from the same fonts.

The font list is curated: fonts that are (near-)identical twins of another font would put
the same image into a class several times and leak between train and evaluation queries,
so only one of each twin group is kept (e.g. ipag/ipagp, VL-Gothic/VL-PGothic, unifont/unifont_jp,
ukai/bkai, uming/bsmi: one design under two names, or proportional and fixed-width variants).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tune_lsd.errors import TuneLsdError

FONT_ROOT = Path("/usr/share/fonts")

# One font per twin group. Dropped twins: bkai00mp, cwkai, gkai00mp (~ukai); bsmi00lp, gbsn00lp
# (~uming); droid fallback (~wqy-microhei); ipagp/ipamp (~ipag/ipam); VL-PGothic (~VL-Gothic);
# unifont_jp (~unifont); MTLmr3m (~MTLc3m); setofont-ex (~setofont).
CURATED_FONTS: tuple[str, ...] = (
    "truetype/arphic/ukai.ttc",
    "truetype/arphic/uming.ttc",
    "truetype/cwtex/cwheib.ttf",
    "truetype/cwtex/cwming.ttf",
    "truetype/cwtex/cwyen.ttf",
    "truetype/wqy/wqy-zenhei.ttc",
    "truetype/wqy/wqy-microhei.ttc",
    "opentype/ipafont-gothic/ipag.ttf",
    "opentype/ipafont-mincho/ipam.ttf",
    "truetype/vlgothic/VL-Gothic-Regular.ttf",
    "truetype/seto/setofont.ttf",
    "truetype/aoyagi-soseki/aoyagi-soseki.ttf",
    "truetype/kouzan-mouhitsu/kouzan-mouhitsu.ttf",
    "truetype/motoya-l-cedar/MTLc3m.ttf",
    "truetype/smiley-sans/SmileySans-Oblique.ttf",
    "truetype/hanazono/HanaMinA.ttf",
    "opentype/unifont/unifont.otf",
    "truetype/yusei-magic/YuseiMagic-Regular.ttf",
)

BUNDLED_PATH = Path(__file__).parent / "bundled" / "glyphs32.npz"


class GlyphSetError(TuneLsdError, FileNotFoundError):
    """A glyph set, or the fonts to render one, cannot be found (message is one line)."""


CANVAS = 160
FONT_PIXELS = 96
MARGIN = 0.08


def available_fonts(font_root: Path = FONT_ROOT) -> list[Path]:
    """The curated fonts that are installed (resolved, so symlinked duplicates collapse)."""
    return [font_root / name for name in CURATED_FONTS if (font_root / name).is_file()]


def font_characters(font_path: Path) -> set[str]:
    """CJK unified ideographs (U+4E00-U+9FFF) the font's character map claims."""
    from fontTools.ttLib import TTFont  # only needed when rendering

    font = TTFont(font_path, fontNumber=0, lazy=True)
    codes = font.getBestCmap() or {}
    return {chr(code) for code in codes if 0x4E00 <= code <= 0x9FFF}


def render_glyph(font: ImageFont.FreeTypeFont, character: str, size: int) -> np.ndarray | None:
    """White-on-black glyph cropped to its ink box (square, aspect kept), ``size`` x ``size``.

    Returns None for glyphs the font claims but draws blank. Rendering on a large canvas and
    cropping to the ink avoids clipping small radicals that text-box centring cuts off.
    """
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text((CANVAS // 2, CANVAS // 2), character, fill=255, font=font, anchor="mm")
    ink = np.asarray(canvas)
    rows, cols = np.nonzero(ink > 0)
    if rows.size == 0:
        return None
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(round(max(bottom - top, right - left) * (1 + 2 * MARGIN)))
    square = Image.new("L", (side, side), 0)
    square.paste(canvas.crop((left, top, right, bottom)), ((side - (right - left)) // 2, (side - (bottom - top)) // 2))
    return np.asarray(square.resize((size, size), Image.Resampling.BOX))


def render_glyph_set(
    num_classes: int,
    size: int = 32,
    num_test_classes: int | None = None,
    min_fonts: int = 16,
    seed: int = 0,
    font_root: Path = FONT_ROOT,
) -> dict[str, np.ndarray]:
    """Render ``num_classes`` random characters in every curated font.

    Characters are drawn (seeded) among those at least ``min_fonts`` fonts render non-blank.
    The last ``num_test_classes`` characters (default 40 %) form the test classes.
    """
    fonts = available_fonts(font_root)
    if len(fonts) < min_fonts:
        raise GlyphSetError(
            f"only {len(fonts)} of the curated CJK fonts are installed under {font_root}; run `make fonts`"
        )
    claimed = {path: font_characters(path) for path in fonts}
    counts: dict[str, int] = {}
    for chars in claimed.values():
        for char in chars:
            counts[char] = counts.get(char, 0) + 1
    candidates = sorted(char for char, count in counts.items() if count >= min_fonts)
    order = np.random.default_rng(seed).permutation(len(candidates))
    loaded = {path: ImageFont.truetype(str(path), FONT_PIXELS, index=0) for path in fonts}

    images: list[np.ndarray] = []
    labels: list[int] = []
    font_ids: list[int] = []
    characters: list[str] = []
    for index in order:
        if len(characters) == num_classes:
            break
        char = candidates[index]
        rendered = [(f, render_glyph(loaded[p], char, size)) for f, p in enumerate(fonts) if char in claimed[p]]
        renders = _drop_duplicates([(f, img) for f, img in rendered if img is not None])
        if len(renders) < min_fonts:
            continue
        for font_id, image in renders:
            images.append(image)
            labels.append(len(characters))
            font_ids.append(font_id)
        characters.append(char)
    if len(characters) < num_classes:
        raise ValueError(f"only {len(characters)} characters have >= {min_fonts} non-blank renders")

    num_test = num_test_classes if num_test_classes is not None else int(round(0.4 * num_classes))
    return {
        "images": np.stack(images)[..., None],  # (N, H, W, 1)
        "labels": np.asarray(labels, dtype=np.int64),
        "font_ids": np.asarray(font_ids, dtype=np.int16),
        "is_test_class": np.arange(num_classes) >= num_classes - num_test,
        "characters": np.asarray(characters),
        "fonts": np.asarray([str(p.relative_to(font_root)) for p in fonts]),
    }


def _drop_duplicates(renders: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Keep the first of pixel-identical renders (fonts that share a glyph design)."""
    seen: set[bytes] = set()
    kept = []
    for font_id, image in renders:
        key = image.tobytes()
        if key not in seen:
            seen.add(key)
            kept.append((font_id, image))
    return kept


def save_glyph_set(glyphs: dict[str, np.ndarray], path: Path) -> None:
    """Write a glyph set as a compressed .npz (deterministic bytes for the same content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **glyphs)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle


def load_glyph_set(path: Path = BUNDLED_PATH) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise GlyphSetError(f"glyph set not found: {path} (render one with `make glyphs`)")
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def main() -> None:
    """``python -m tune_lsd.data.glyphs OUT.npz [classes] [size]``: render a glyph set."""
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLED_PATH
    num_classes = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    glyphs = render_glyph_set(num_classes, size)
    save_glyph_set(glyphs, out)
    summary = {
        "path": str(out),
        "images": len(glyphs["labels"]),
        "classes": num_classes,
        "size": size,
        "test_classes": int(glyphs["is_test_class"].sum()),
        "fonts": len(glyphs["fonts"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
