"""Datasets as decoded uint8 arrays in memory, with their standard train/test class split.

Every loader returns a :class:`LabelledImages` for the training classes and one for the test
classes. Images are decoded once per machine (their shorter side resized to a fixed side and
the centre square kept; decoding.py, cache.py) and kept as a ``(N, H, W, C)`` uint8 array;
transforms run later on tensors (see transforms.py). :func:`data_footprint` says what that
array will take from the dataset's listing alone, before anything is decoded.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tune_lsd.data.cache import cached_decode
from tune_lsd.data.decoding import MissingImageError, UnreadableImageError, decode_all
from tune_lsd.data.glyphs import BUNDLED_PATH, load_glyph_set
from tune_lsd.data.memory import DataFootprint
from tune_lsd.data.remote import is_remote_root, local_root
from tune_lsd.errors import TuneLsdError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


class DatasetError(TuneLsdError, FileNotFoundError):
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

    def subset(self, mask: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.images[mask], self.labels[mask], None if self.is_query is None else self.is_query[mask]
        )

    def with_labels(self, labels: np.ndarray) -> LabelledImages:
        """The same images (and query/gallery roles) with other labels."""
        return LabelledImages(self.images, labels, self.is_query)


@dataclass
class FileSet:
    """Image files not yet decoded, with their labels (and In-Shop's query/gallery roles)."""

    files: list[Path]
    labels: np.ndarray
    is_query: np.ndarray | None = None

    @classmethod
    def select(
        cls, files: list[Path], labels: np.ndarray, mask: np.ndarray, is_query: np.ndarray | None = None
    ) -> FileSet:
        return cls([path for path, keep in zip(files, mask) if keep], labels[mask], is_query)


@dataclass
class FileListing:
    """A folder dataset's standard split, before decoding: what its listing files say."""

    train: FileSet
    test: FileSet


@dataclass
class ClassSplit:
    """A dataset's standard split: training classes and (disjoint) test classes."""

    train: LabelledImages
    test: LabelledImages


def load_dataset(name: str, root: str | None, size: int, cache: bool = True, log=None) -> ClassSplit:
    """Load a dataset by name at side ``size``; errors are one-line DatasetErrors.

    Folder datasets are listed, then decoded (shorter side -> ``size``, centre square kept; see
    decoding.py) through this machine's decode cache unless ``cache`` is False (cache.py). A
    ``root`` in object storage (``s3://...``) is mirrored to this machine first (remote.py).
    """
    path = _local_root(name, root, log)
    if name in ARRAY_DATASETS:
        return ARRAY_DATASETS[name](path, size)
    assert path is not None  # check_root: a folder dataset has a root
    listing = FILE_DATASETS[name](path)
    return ClassSplit(
        train=_decode_set(listing.train, size, f"{name} train in {root}", cache, log),
        test=_decode_set(listing.test, size, f"{name} test in {root}", cache, log),
    )


def data_footprint(name: str, root: str | None, size: int, log=None) -> DataFootprint:
    """What the dataset will take decoded at ``size``, from its listing alone (nothing decoded;
    a root in object storage is mirrored to this machine first)."""
    path = _local_root(name, root, log)
    if name in ARRAY_DATASETS:
        _, is_test, channels = _array_labels(name, path)
        return DataFootprint(name, size, channels, int((~is_test).sum()), int(is_test.sum()))
    assert path is not None  # check_root: a folder dataset has a root
    listing = FILE_DATASETS[name](path)
    return DataFootprint(name, size, 3, len(listing.train.files), len(listing.test.files))


def check_root(name: str, root: str | None) -> None:
    """The cheap check of ``data.root`` (before a search writes anything): given when needed, existing."""
    if root is not None and not Path(root).exists():
        raise DatasetError(f"data.root for dataset {name!r} does not exist: {root}")
    if root is None and name not in ARRAY_DATASETS:
        raise DatasetError(f"dataset {name!r} needs data.root (the folder you downloaded it to)")


def _local_root(name: str, root: str | None, log) -> Path | None:
    """The checked dataset folder on this machine (a URI's local mirror, fetched if needed)."""
    _check_name(name)
    if is_remote_root(root):
        return Path(local_root(root, log))
    check_root(name, root)
    return Path(root) if root else None


def _check_name(name: str) -> None:
    if name not in ARRAY_DATASETS and name not in FILE_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join([*ARRAY_DATASETS, *FILE_DATASETS])}")


# --- bundled / generated data: arrays, not files ------------------------------------------------


def _load_glyphs(root: Path | None, size: int) -> ClassSplit:
    glyphs = load_glyph_set(_glyph_path(root))
    is_test = glyphs["is_test_class"][glyphs["labels"]]
    data = LabelledImages(_resize_all(glyphs["images"], size), glyphs["labels"])
    return ClassSplit(train=data.subset(~is_test), test=data.subset(is_test))


def _glyph_path(root: Path | None) -> Path:
    path = BUNDLED_PATH if root is None else (root if root.suffix == ".npz" else root / "glyphs.npz")
    if not path.is_file():
        raise DatasetError(f"glyph file not found: {path}")
    return path


def _load_fashion_mnist(root: Path | None, size: int) -> ClassSplit:
    images = _resize_all(np.concatenate([_idx_file(root, prefix, "images") for prefix in ("train", "t10k")]), size)
    labels = np.concatenate([_idx_file(root, prefix, "labels") for prefix in ("train", "t10k")])
    data = LabelledImages(images, labels)
    return ClassSplit(train=data.subset(labels < 5), test=data.subset(labels >= 5))


def _idx_file(root: Path | None, prefix: str, kind: str) -> np.ndarray:
    path = (root or FASHION_MNIST_ROOT) / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
    if not path.is_file():
        raise DatasetError(f"Fashion-MNIST files missing in {path.parent} (apt-get install dataset-fashion-mnist)")
    with gzip.open(path) as f:
        if kind == "images":
            return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        return np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)


def _array_labels(name: str, root: Path | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels, is_test, channels) of an array dataset, without its images."""
    if name == "glyphs":
        with np.load(_glyph_path(root)) as archive:
            labels = archive["labels"]
            return labels, archive["is_test_class"][labels], archive["images"].shape[-1]
    labels = np.concatenate([_idx_file(root, prefix, "labels") for prefix in ("train", "t10k")])
    return labels, labels >= 5, 1


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    mode = "L" if images.shape[3] == 1 else "RGB"
    resized = [
        np.asarray(
            Image.fromarray(image.squeeze(-1) if mode == "L" else image).resize((size, size), Image.Resampling.BILINEAR)
        )
        for image in images
    ]
    stacked = np.stack(resized)
    return stacked[..., None] if mode == "L" else stacked


# --- standard DML benchmarks and your own folders: file listings ---------------------------------


def _list_cub(root: Path) -> FileListing:
    image_root = _first_existing(root, ["images", "CUB_200_2011/images"])
    class_dirs = sorted(d for d in image_root.iterdir() if d.is_dir())
    if len(class_dirs) < 2:
        raise DatasetError(f"no class folders in {image_root} (expected images/001.Name/*.jpg)")
    files, labels = _files_by_class_dir(class_dirs)
    return _split_by_label(files, labels, first_test_label=len(class_dirs) // 2)  # 100 of 200


def _list_cars(root: Path) -> FileListing:
    annotations = root / "cars_annos.mat"
    if not annotations.is_file():
        raise DatasetError(f"cars_annos.mat not found in {root} (expected car_ims/ and cars_annos.mat)")
    from scipy.io import loadmat

    records = loadmat(annotations, squeeze_me=True)["annotations"]
    files = [root / str(r["relative_im_path"]) for r in records]
    labels = np.asarray([int(r["class"]) - 1 for r in records], dtype=np.int64)
    return _split_by_label(files, labels, first_test_label=(labels.max() + 1) // 2)  # 98 of 196


def _list_sop(root: Path) -> FileListing:
    parts = {}
    for part in ("train", "test"):
        listing = root / f"Ebay_{part}.txt"
        if not listing.is_file():
            raise DatasetError(f"{listing.name} not found in {root} (Stanford Online Products layout)")
        rows = [line.split() for line in listing.read_text().splitlines()[1:] if line.strip()]
        parts[part] = FileSet(
            [root / row[3] for row in rows], np.asarray([int(row[1]) for row in rows], dtype=np.int64)
        )
    return FileListing(**parts)


def _list_inshop(root: Path) -> FileListing:
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
    is_test = status != "train"
    return FileListing(
        train=FileSet.select(files, labels, ~is_test),
        test=FileSet.select(files, labels, is_test, is_query=status[is_test] == "query"),
    )


def _list_folder(root: Path) -> FileListing:
    parts = {}
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found (expected {root}/train/<class>/* and {root}/test/<class>/*)")
        parts[part] = FileSet(*_files_by_class_dir(sorted(d for d in folder.iterdir() if d.is_dir())))
    return FileListing(**parts)


ARRAY_DATASETS = {"glyphs": _load_glyphs, "fashion_mnist": _load_fashion_mnist}
FILE_DATASETS = {"cub": _list_cub, "cars": _list_cars, "sop": _list_sop, "inshop": _list_inshop, "folder": _list_folder}


# --- helpers -------------------------------------------------------------------------------------


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


def _split_by_label(files: list[Path], labels: np.ndarray, first_test_label: int) -> FileListing:
    is_test = labels >= first_test_label
    return FileListing(train=FileSet.select(files, labels, ~is_test), test=FileSet.select(files, labels, is_test))


def _decode_set(files: FileSet, size: int, description: str, cache: bool, log) -> LabelledImages:
    try:
        images = (
            cached_decode(files.files, size, description, log)
            if cache
            else decode_all(files.files, size, description, log)
        )
    except (MissingImageError, UnreadableImageError) as error:
        raise DatasetError(str(error)) from None
    return LabelledImages(images, files.labels, files.is_query)
