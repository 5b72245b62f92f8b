"""Image folders (``folder:DIR``): every image decoded once into memory at 32×32, and cached.

The decoded tensors are kept next to the images (or in the user's cache when the folder
is read-only), keyed by a hash of the file list with sizes and mtimes.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError
from ..safeio import open_regular
from .cpus import available_cpus
from .sources import check_class_tree, is_image_file, layout_error

CACHE_NAME = ".resnet_explorer_cache.pt"


def _decode_files(paths: Sequence[str], size: int) -> np.ndarray:
    """Decode images to an n×size×size×3 uint8 array (a worker's share of the files)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                if img.mode != "RGB":
                    img = img.convert("RGB")
                if img.size != (size, size):  # keep the aspect: shorter side to size, centre crop
                    img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img)
        except Exception as e:
            raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return out


def _decode_all(paths: Sequence[str], size: int, workers: int | None) -> torch.Tensor:
    workers = available_cpus() if workers is None else workers
    if workers <= 1 or len(paths) < 4000:  # a pool costs more than it saves on small folders
        arrays = [_decode_files(paths, size)]
    else:
        step = max(1, min(2000, math.ceil(len(paths) / (4 * workers))))
        chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            arrays = list(pool.map(partial(_decode_files, size=size), chunks))
    return torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2).contiguous()


def _list_split(root: str, split: str, classes: Sequence[str]) -> tuple[list[str], list[int], list[str]]:
    """Relative paths, labels, and the cache-key lines (path, size, mtime) of one split."""
    paths, labels, lines = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if is_image_file(e, f"folder:{root}")), key=lambda e: e.name)
        for e in entries:
            st = e.stat()
            rel = f"{split}/{name}/{e.name}"
            paths.append(rel)
            labels.append(label)
            lines.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
    return paths, labels, lines


def _cache_paths(root: str) -> list[str]:
    """Where a folder's decoded tensor may live: next to it, else in the user's cache."""
    user = os.environ.get("RESNET_EXPLORER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resnet_explorer"
    )
    tag = hashlib.sha256(root.encode()).hexdigest()[:16]
    return [os.path.join(root, CACHE_NAME), os.path.join(user, f"folder-{tag}.pt")]


def _load_cache(root: str, key: str) -> dict[str, Any] | None:
    for path in _cache_paths(root):
        try:
            with open_regular(path) as f:  # a FIFO or device planted there is never waited on
                blob = torch.load(f, weights_only=True)
        except Exception:  # absent, not a file, unreadable or stale format: decode again
            continue
        if isinstance(blob, dict) and blob.get("key") == key:
            return blob
    return None


def _save_cache(root: str, blob: dict[str, Any]) -> str | None:
    for path in _cache_paths(root):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            os.close(fd)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as readable as the images
            try:
                torch.save(blob, tmp)
                os.replace(tmp, path)  # atomic: readers never see half a file
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return path
        except OSError:
            continue
    return None


def load_image_folder(
    root: str, size: int = 32, workers: int | None = None, cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` as uint8 NCHW tensors + labels.

    Classes are the sorted folder names. Images not already size×size are resized
    (shorter side, then a centre crop). The decoded tensors are cached in
    ``root/.resnet_explorer_cache.pt`` (or the user cache if root is read-only), keyed
    by a hash of the file list with sizes and mtimes, so the next load is instant.
    """
    root = os.path.abspath(root)
    arg = f"folder:{root}"
    if not os.path.isdir(root):
        raise layout_error(arg, "no such directory", "folder")
    classes = check_class_tree(root, arg, "folder", ("train", "test"))
    train_paths, train_labels, train_lines = _list_split(root, "train", classes)
    test_paths, test_labels, test_lines = _list_split(root, "test", classes)
    key_text = "\n".join([f"v1 size={size}", *classes, *train_lines, *test_lines])
    key = hashlib.sha256(key_text.encode("utf-8", "surrogateescape")).hexdigest()  # names need not be UTF-8
    if cache and (blob := _load_cache(root, key)) is not None:
        return blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], list(blob["classes"])

    images = _decode_all([os.path.join(root, p) for p in train_paths + test_paths], size, workers)
    n = len(train_paths)
    blob = dict(
        key=key, classes=list(classes),
        train_x=images[:n].clone(), train_y=torch.tensor(train_labels, dtype=torch.int64),
        test_x=images[n:].clone(), test_y=torch.tensor(test_labels, dtype=torch.int64),
    )
    if cache:
        _save_cache(root, blob)
    return blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], classes
