"""Tiny fake trees of the standard datasets, in their real file formats (for loader and preset tests).

Every class gets its own random pattern and its images are noisy copies of it, so a network
can tell classes apart and the retrieval metrics are not degenerate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _image(path: Path, pattern: np.ndarray, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy = np.clip(pattern + rng.normal(0, 60, pattern.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path)


def write_fake_dataset(
    name: str, root: Path, classes: int = 20, per_class: int = 3, size: int = 20, seed: int = 0
) -> None:
    """``classes`` classes (the first half training, the second test, as each loader splits
    them) of ``per_class`` images each; In-Shop's test items get one query and the rest gallery."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (classes, size, size, 3)).astype(np.float32)
    train_classes = classes // 2
    if name == "cub":
        for c in range(classes):
            for i in range(per_class):
                _image(root / "images" / f"{c + 1:03d}.Bird_{c + 1}" / f"{i}.jpg", patterns[c], rng)
    elif name == "cars":
        from scipy.io import savemat

        records = np.zeros(classes * per_class, dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
        for n in range(classes * per_class):
            c = n % classes
            _image(root / "car_ims" / f"{n:06d}.jpg", patterns[c], rng)
            records[n] = (f"car_ims/{n:06d}.jpg", c + 1, int(c >= train_classes))
        savemat(root / "cars_annos.mat", {"annotations": records})
    elif name == "sop":
        for part, chosen in (("train", range(train_classes)), ("test", range(train_classes, classes))):
            lines = ["image_id class_id super_class_id path"]
            for c in chosen:
                for i in range(per_class):
                    relative = f"bicycle_final/{c}_{i}.JPG"
                    _image(root / relative, patterns[c], rng)
                    lines.append(f"{len(lines)} {c + 1} 1 {relative}")
            (root / f"Ebay_{part}.txt").write_text("\n".join(lines) + "\n")
    elif name == "inshop":
        rows = []
        for c in range(classes):
            statuses = ["train"] * per_class if c < train_classes else ["query"] + ["gallery"] * (per_class - 1)
            for i, status in enumerate(statuses):
                relative = f"img/MEN/Denim/id_{c:08d}/{i:02d}_1_front.jpg"
                _image(root / relative, patterns[c], rng)
                rows.append(f"{relative}  id_{c:08d}  {status}")
        (root / "list_eval_partition.txt").write_text(
            f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n"
        )
    else:
        raise ValueError(f"no fake tree for dataset {name!r}")
