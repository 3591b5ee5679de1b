"""Datasets as decoded uint8 arrays in memory, with their standard train/test class split.

Every loader returns a :class:`LabelledImages` for the training classes and one for the test
classes. Images are decoded once, resized to a fixed square side and kept as a
``(N, H, W, C)`` uint8 array; transforms run later on tensors (see transforms.py).

Supported folder layouts (users download the datasets themselves):

- ``cub``: ``CUB_200_2011/images/001.Black_footed_Albatross/*.jpg`` ... classes 1-100
  train, 101-200 test.
- ``cars``: ``car_ims/*.jpg`` + ``cars_annos.mat`` (Stanford Cars); classes 1-98 train,
  99-196 test.
- ``sop``: ``Ebay_train.txt`` / ``Ebay_test.txt`` + the image folders they name.
- ``inshop``: ``list_eval_partition.txt`` + ``img/...``; train items vs query and gallery
  items (the test set is evaluated query -> gallery).
- ``fashion_mnist``: the idx gzip files of Debian's ``dataset-fashion-mnist``; classes 0-4
  train, 5-9 test.
- ``folder``: ``train/<class>/*`` and ``test/<class>/*`` for your own data.
- ``glyphs``: the bundled CJK glyph sample, or a .npz rendered by ``make glyphs``.
"""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tune_lsd.data.glyphs import BUNDLED_PATH, load_glyph_set

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


class DatasetError(FileNotFoundError):
    """A dataset folder is missing or not in the expected layout (message is one line)."""


@dataclass
class LabelledImages:
    """Decoded images ``(N, H, W, C)`` uint8 with integer class labels ``(N,)``.

    ``is_query`` marks a set evaluated query -> gallery (In-Shop's test set): True for query
    images, False for gallery images. Without it every image is a query against the others.
    """

    images: np.ndarray
    labels: np.ndarray
    is_query: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")
        if self.is_query is not None and len(self.is_query) != len(self.labels):
            raise ValueError("is_query and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(np.unique(self.labels))

    def subset(self, mask: np.ndarray) -> "LabelledImages":
        return LabelledImages(self.images[mask], self.labels[mask],
                              None if self.is_query is None else self.is_query[mask])

    def with_labels(self, labels: np.ndarray) -> "LabelledImages":
        """The same images (and query/gallery roles) with other labels."""
        return LabelledImages(self.images, labels, self.is_query)


@dataclass
class ClassSplit:
    """A dataset's standard split: training classes and (disjoint) test classes."""

    train: LabelledImages
    test: LabelledImages


def load_dataset(name: str, root: str | None, size: int) -> ClassSplit:
    """Load a dataset by name at square side ``size``; errors are one-line DatasetErrors."""
    loaders = {
        "glyphs": _load_glyphs,
        "cub": _load_cub,
        "cars": _load_cars,
        "sop": _load_sop,
        "inshop": _load_inshop,
        "fashion_mnist": _load_fashion_mnist,
        "folder": _load_folder,
    }
    if name not in loaders:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(loaders)}")
    check_root(name, root)
    return loaders[name](Path(root) if root else None, size)


def check_root(name: str, root: str | None) -> None:
    """The cheap check of ``data.root`` (before a search writes anything): given when needed, existing."""
    if root is not None and not Path(root).exists():
        raise DatasetError(f"data.root for dataset {name!r} does not exist: {root}")
    if root is None and name not in ("glyphs", "fashion_mnist"):
        raise DatasetError(f"dataset {name!r} needs data.root (the folder you downloaded it to)")


# --- bundled / generated data ----------------------------------------------------------------


def _load_glyphs(root: Path | None, size: int) -> ClassSplit:
    path = BUNDLED_PATH if root is None else (root if root.suffix == ".npz" else root / "glyphs.npz")
    if not path.is_file():
        raise DatasetError(f"glyph file not found: {path}")
    glyphs = load_glyph_set(path)
    images = _resize_all(glyphs["images"], size)
    is_test = glyphs["is_test_class"][glyphs["labels"]]
    data = LabelledImages(images, glyphs["labels"])
    return ClassSplit(train=data.subset(~is_test), test=data.subset(is_test))


def _load_fashion_mnist(root: Path | None, size: int) -> ClassSplit:
    root = root or FASHION_MNIST_ROOT
    parts = []
    for prefix in ("train", "t10k"):
        image_file = root / f"{prefix}-images-idx3-ubyte.gz"
        label_file = root / f"{prefix}-labels-idx1-ubyte.gz"
        if not image_file.is_file() or not label_file.is_file():
            raise DatasetError(f"Fashion-MNIST files missing in {root} (apt-get install dataset-fashion-mnist)")
        with gzip.open(image_file) as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        with gzip.open(label_file) as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
        parts.append((images, labels))
    images = _resize_all(np.concatenate([p[0] for p in parts]), size)
    labels = np.concatenate([p[1] for p in parts])
    data = LabelledImages(images, labels)
    return ClassSplit(train=data.subset(labels < 5), test=data.subset(labels >= 5))


# --- standard DML benchmarks -----------------------------------------------------------------


def _load_cub(root: Path, size: int) -> ClassSplit:
    image_root = _first_existing(root, ["images", "CUB_200_2011/images"])
    class_dirs = sorted(d for d in image_root.iterdir() if d.is_dir())
    if len(class_dirs) < 2:
        raise DatasetError(f"no class folders in {image_root} (expected images/001.Name/*.jpg)")
    files, labels = _files_by_class_dir(class_dirs)
    half = len(class_dirs) // 2  # 100 of 200 in the real dataset
    return _split_by_label(files, labels, is_test_label=lambda label: label >= half, size=size)


def _load_cars(root: Path, size: int) -> ClassSplit:
    annotations = root / "cars_annos.mat"
    if not annotations.is_file():
        raise DatasetError(f"cars_annos.mat not found in {root} (expected car_ims/ and cars_annos.mat)")
    from scipy.io import loadmat

    records = loadmat(annotations, squeeze_me=True)["annotations"]
    files = [root / str(r["relative_im_path"]) for r in records]
    labels = np.asarray([int(r["class"]) - 1 for r in records], dtype=np.int64)
    half = (labels.max() + 1) // 2  # 98 of 196
    return _split_by_label(files, labels, is_test_label=lambda label: label >= half, size=size)


def _load_sop(root: Path, size: int) -> ClassSplit:
    splits = {}
    for part in ("train", "test"):
        listing = root / f"Ebay_{part}.txt"
        if not listing.is_file():
            raise DatasetError(f"{listing.name} not found in {root} (Stanford Online Products layout)")
        rows = [line.split() for line in listing.read_text().splitlines()[1:] if line.strip()]
        files = [root / row[3] for row in rows]
        labels = np.asarray([int(row[1]) for row in rows], dtype=np.int64)
        splits[part] = LabelledImages(_decode_all(files, size), labels)
    return ClassSplit(train=splits["train"], test=splits["test"])


def _load_inshop(root: Path, size: int) -> ClassSplit:
    """In-Shop: train items vs the query and gallery items, evaluated query -> gallery."""
    listing = _first_existing(root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"])
    rows = [line.split() for line in listing.read_text().splitlines()[2:] if line.strip()]
    item_ids = sorted({row[1] for row in rows})
    item_index = {item: i for i, item in enumerate(item_ids)}
    files = [root / row[0] for row in rows]
    labels = np.asarray([item_index[row[1]] for row in rows], dtype=np.int64)
    status = np.asarray([row[2] for row in rows])
    unknown = sorted(set(status) - {"train", "query", "gallery"})
    if unknown:
        raise DatasetError(f"{listing}: unknown evaluation_status {unknown[0]!r} (expected train, query or gallery)")
    images = _decode_all(files, size)
    is_test = status != "train"
    return ClassSplit(train=LabelledImages(images[~is_test], labels[~is_test]),
                      test=LabelledImages(images[is_test], labels[is_test], is_query=status[is_test] == "query"))


def _load_folder(root: Path, size: int) -> ClassSplit:
    parts = {}
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found (expected {root}/train/<class>/* and {root}/test/<class>/*)")
        class_dirs = sorted(d for d in folder.iterdir() if d.is_dir())
        files, labels = _files_by_class_dir(class_dirs)
        parts[part] = LabelledImages(_decode_all(files, size), labels)
    return ClassSplit(train=parts["train"], test=parts["test"])


# --- helpers ---------------------------------------------------------------------------------


def _first_existing(root: Path, candidates: list[str]) -> Path:
    for name in candidates:
        if (root / name).exists():
            return root / name
    raise DatasetError(f"none of {', '.join(candidates)} found in {root}")


def _files_by_class_dir(class_dirs: list[Path]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    if not files:
        raise DatasetError(f"no images found under {class_dirs[0].parent}")
    return files, np.asarray(labels, dtype=np.int64)


def _split_by_label(files: list[Path], labels: np.ndarray, is_test_label, size: int) -> ClassSplit:
    data = LabelledImages(_decode_all(files, size), labels)
    is_test = np.asarray([is_test_label(label) for label in labels])
    return ClassSplit(train=data.subset(~is_test), test=data.subset(is_test))


def _decode(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"image listed by the dataset is missing: {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def _decode_all(files: list[Path], size: int) -> np.ndarray:
    """Decode (with threads: PIL releases the GIL) into one (N, size, size, 3) uint8 array."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return np.stack(list(pool.map(lambda p: _decode(p, size), files)))


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    mode = "L" if images.shape[3] == 1 else "RGB"
    resized = [
        np.asarray(Image.fromarray(image.squeeze(-1) if mode == "L" else image).resize((size, size), Image.Resampling.BILINEAR))
        for image in images
    ]
    stacked = np.stack(resized)
    return stacked[..., None] if mode == "L" else stacked
