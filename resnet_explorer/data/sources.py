"""What ``--data`` names: the dataset sources, parsed and their layout checked.

    synthetic[:N[:SEED]]  the embedded default (`data.synthetic`): N training images
                          (default 10,000) and 2,000 test images, generated from SEED (default 0)
    synthetic-demo[:N[:SEED]]  the same generator made for the CPU demo: 16×16 images, a
                          colour cast per class, 5 sub-types per class, N = 10,000 by default
                          (see `data.synthetic`)
    cifar10:DIR           torchvision's CIFAR-10 folder DIR/cifar-10-batches-py (or DIR itself)
    folder:DIR            an image-folder tree DIR/train/<class>/* and DIR/test/<class>/*,
                          decoded once into memory at 32×32 and cached next to the images
    imagenet:DIR          ILSVRC-2012, DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG, read lazily

`parse_data` checks a dataset's layout (not its every file) and returns a `DataSource`,
which a run records in its data.json.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataError
from ..spec import ArchSpec

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
SYNTHETIC_CLASSES = tuple(f"pattern{i}" for i in range(10))
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10_000, 2_000
SYNTHETIC_MAX = 1_000_000  # images generated at most (3 GB at 32×32): more is a typo, not a dataset
# Named variants of the generator (`data.synthetic`): its knobs that differ from the default,
# and how many training images the name alone means. synthetic-demo is the CPU demo's
# dataset (16×16; see the docstring of `data.synthetic`).
SYNTHETIC_VARIANTS: dict[str, dict[str, Any]] = {
    "synthetic": {},
    "synthetic-demo": {"size": 16, "tint": 0.6, "modes": 5},
}
SYNTHETIC_VARIANT_TRAIN = {"synthetic": SYNTHETIC_TRAIN, "synthetic-demo": 10_000}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
FORMS = "synthetic[:N[:SEED]], synthetic-demo[:N[:SEED]], cifar10:DIR, folder:DIR or imagenet:DIR"
LAYOUTS = {
    "synthetic": "synthetic, synthetic:N or synthetic:N:SEED (or synthetic-demo, synthetic-demo:N, "
                 "synthetic-demo:N:SEED) with 10 <= N <= 1,000,000 training images and SEED >= 0",
    "cifar10": "DIR/cifar-10-batches-py/ holding data_batch_1..5 and test_batch "
               "(torchvision's CIFAR-10 layout; download_cifar10(DIR) fetches it)",
    "folder": "DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg",
    "imagenet": "DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (val sorted into class folders)",
}


def layout_error(arg: str, problem: str, kind: str) -> DataError:
    """The one-line error for a ``--data`` argument whose dataset is not laid out as ``kind``'s is."""
    return DataError(f"{arg}: {problem}; expected {LAYOUTS[kind]}")


@dataclass
class DataSource:
    """What ``--data`` named: enough to load it, and to record it with a run (`to_dict`)."""

    kind: str  # synthetic | cifar10 | folder | imagenet
    path: str | None  # the dataset's directory (None for synthetic)
    num_classes: int
    classes: list[str] = field(default_factory=list)
    image_size: int = 32  # side of the training input: 32 (CIFAR-style) or 224 (ImageNet)
    n_train: int | None = None  # synthetic only: images generated per split
    n_test: int | None = None
    seed: int | None = None  # synthetic only: the dataset's own seed (not the training seed)
    variant: str = "synthetic"  # synthetic only: a name in SYNTHETIC_VARIANTS
    arg: str | None = field(default=None, compare=False)  # the --data string it was parsed from (kept in data.json)

    @property
    def spec(self) -> str:
        """The ``--data`` string that names this source again."""
        if self.kind == "synthetic":
            return f"{self.variant}:{self.n_train}:{self.seed}"
        return f"{self.kind}:{self.path}"

    @property
    def in_memory(self) -> bool:
        """Whether the whole dataset fits in one uint8 tensor (all but ImageNet)."""
        return self.kind != "imagenet"

    def shape(self, spec: ArchSpec) -> ArchSpec:
        """``spec`` as it trains on this data: its input size and classes are the data's
        (what `train.train` records), so its counted cost is the cost it trains at."""
        return spec.replace(num_classes=self.num_classes, input_size=self.image_size).validate()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the source (its ``arg`` is recorded beside it)."""
        d = asdict(self)
        del d["arg"]
        return {**d, "spec": self.spec}


def parse_data(arg: str) -> DataSource:
    """Parse a ``--data`` argument and check the dataset's layout (not its every file)."""
    source = _parse(arg)
    source.arg = arg
    return source


def as_source(data: str | DataSource) -> DataSource:
    """A `DataSource` as given, or a ``--data`` string parsed: what a library entry point
    (train, an experiment, an evaluation) does once, before passing the source down."""
    return data if isinstance(data, DataSource) else parse_data(data)


def _parse(arg: str) -> DataSource:
    kind, _, rest = arg.partition(":")
    kind = kind.strip().lower()
    if kind in SYNTHETIC_VARIANTS:
        return _parse_synthetic(arg, rest, kind)
    if kind not in ("cifar10", "folder", "imagenet"):
        raise DataError(f"unknown data source {arg!r}: use {FORMS}")
    if not rest.strip():
        raise layout_error(arg, "no directory given", kind)
    path = os.path.abspath(os.path.expanduser(rest.strip()))
    if not os.path.isdir(path):
        raise layout_error(arg, "no such directory", kind)
    if kind == "cifar10":
        folder = cifar10_folder(path, arg)
        return DataSource("cifar10", path, 10, list(_cifar10_classes(folder)), 32)
    if kind == "folder":
        classes = check_class_tree(path, arg, "folder", ("train", "test"))
        return DataSource("folder", path, len(classes), classes, 32)
    classes = check_class_tree(path, arg, "imagenet", ("train", "val"))
    return DataSource("imagenet", path, len(classes), classes, 224)


def _parse_synthetic(arg: str, rest: str, variant: str = "synthetic") -> DataSource:
    parts = rest.split(":") if rest else []
    try:
        n_train = int(parts[0]) if parts else SYNTHETIC_VARIANT_TRAIN[variant]
        seed = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise layout_error(arg, "N and SEED must be integers", "synthetic") from None
    if len(parts) > 2 or not 10 <= n_train <= SYNTHETIC_MAX or not 0 <= seed < 2**63:
        raise layout_error(arg, "bad size or seed", "synthetic")
    size = SYNTHETIC_VARIANTS[variant].get("size", 32)
    return DataSource(
        "synthetic", None, 10, list(SYNTHETIC_CLASSES), size, n_train, SYNTHETIC_TEST, seed, variant
    )


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def is_image_file(entry: os.DirEntry, arg: str) -> bool:
    """Whether a folder entry is an image file; a link in a loop (or that cannot be read) is one line."""
    if not _is_image(entry.name):
        return False
    try:
        return entry.is_file() and entry.stat().st_size >= 0
    except OSError as e:
        raise DataError(f"{arg}: cannot read {entry.path} ({e.strerror}): remove or fix that link") from None


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def check_class_tree(root: str, arg: str, kind: str, splits: Sequence[str]) -> list[str]:
    """The sorted class names of ``root/<split>/<class>/``, after checking the layout."""
    classes: list[str] | None = None
    for split in splits:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise layout_error(arg, f"no {split}/ subfolder", kind)
        names = _subdirs(folder)
        if not names:
            raise layout_error(arg, f"{split}/ has no class subfolders", kind)
        if classes is None:
            classes = names
        elif names != classes:
            only_a = sorted(set(classes) - set(names))[:3]
            only_b = sorted(set(names) - set(classes))[:3]
            raise layout_error(
                arg, f"{split}/ and {splits[0]}/ have different classes "
                f"(only in {splits[0]}/: {', '.join(only_a) or '-'}; only in {split}/: {', '.join(only_b) or '-'})",
                kind,
            )
        for name in names:
            with os.scandir(os.path.join(folder, name)) as it:
                if not any(is_image_file(e, arg) for e in it):
                    raise layout_error(arg, f"class folder {split}/{name}/ has no images", kind)
    assert classes is not None
    return classes





CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


def cifar10_folder(path: str, arg: str) -> str:
    """The folder holding CIFAR-10's batch files: ``path/cifar-10-batches-py`` or ``path`` itself."""
    for folder in (os.path.join(path, "cifar-10-batches-py"), path):
        if os.path.isfile(os.path.join(folder, "data_batch_1")):
            missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
                       if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise layout_error(arg, f"{folder} lacks {', '.join(missing)}", "cifar10")
            return folder
    raise layout_error(arg, "no cifar-10-batches-py/ with data_batch_1..5 and test_batch", "cifar10")


# What a CIFAR-10 batch file may ask the unpickler to build: numpy arrays and their dtypes.
# Anything else (os.system, eval …) is refused: a batch file is data, never code.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _DataUnpickler(pickle.Unpickler):
    """pickle, but only plain containers and numpy arrays: a hostile batch file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it asks to build {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


def unpickle_batch(path: str) -> dict[str, Any]:
    """A CIFAR-10 batch file as a dict with str keys, unpickled with nothing but numpy arrays allowed."""
    with open(path, "rb") as f:
        raw = _DataUnpickler(f, encoding="bytes").load()
    if not isinstance(raw, dict):
        raise pickle.UnpicklingError(f"it holds a {type(raw).__name__}, not a CIFAR-10 batch (a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _cifar10_classes(folder: str) -> tuple[str, ...]:
    try:
        names = unpickle_batch(os.path.join(folder, "batches.meta"))["label_names"]
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception:  # no or odd meta file: CIFAR-10's names are fixed anyway
        return CIFAR10_CLASSES
