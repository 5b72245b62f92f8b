"""Reading ImageNet files for the GPU path: raw JPEG bytes for nvJPEG, everything else
decoded on the CPU exactly as the PIL path decodes it.

ILSVRC-2012 is not all plain JPEG: a few files are CMYK JPEGs, one is a PNG named
``.JPEG``, many are greyscale, and a copy on disk can hold a truncated or corrupt file.
`read_sample` (run in the loader's worker processes) looks at a file's header: a baseline
or progressive 8-bit JPEG with 1 or 3 components that ends where a JPEG ends goes to the
GPU as bytes; anything else (CMYK, PNG, 12-bit, lossless, truncated, huge, unknown) is
decoded there with PIL and ``convert("RGB")``, as torchvision's ImageFolder does for the
CPU path. A file neither can read becomes an `Unreadable` (the loader skips it with one
warning line naming it; see `ImageNetLoader`).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..errors import one_line

MAX_FILE_BYTES = 256 << 20  # no ILSVRC file comes near; a bigger one is refused unread
_SOF_GPU = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive (Huffman)
_SOF_ANY = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass
class Unreadable:
    """A file that could not be read or decoded, and why (one line)."""

    path: str
    reason: str


@dataclass
class Sample:
    """One file as the GPU path receives it from a worker: JPEG bytes (``encoded``; bytes
    travel through the worker's pipe, where a tensor each would cost a file descriptor) or
    a decoded uint8 3×H×W RGB image, with its label, its augmentation seed, its index, its
    (height, width) and the views drawn for it there (from its seed)."""

    data: torch.Tensor | bytearray
    encoded: bool
    label: int
    seed: int
    index: int
    path: str
    size: tuple[int, int] = (0, 0)
    views: list = field(default_factory=list)


def gpu_decodable(data: bytes | bytearray) -> bool:
    """Whether ``data`` is a JPEG that nvJPEG decodes to the same RGB as PIL: 8-bit
    baseline/extended/progressive Huffman, 1 or 3 components (YCbCr, not Adobe RGB), at
    most PIL's pixel limit, ending in an end-of-image marker (else it may be truncated)."""
    return jpeg_size(data) is not None


def jpeg_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """(height, width) of a JPEG that `gpu_decodable` accepts, else None."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8 or bytes(data[-4096:]).rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None
    i, adobe_rgb = 2, False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xEE and data[i + 4:i + 9] == b"Adobe" and i + 15 < n:
            adobe_rgb = data[i + 15] == 0  # APP14 transform 0: the components are RGB, not YCbCr
        if marker in _SOF_ANY:
            if i + 10 > n:
                return None
            precision = data[i + 4]
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            components = data[i + 9]
            limit = Image.MAX_IMAGE_PIXELS or float("inf")
            ok = (marker in _SOF_GPU and precision == 8 and components in (1, 3)
                  and not (components == 3 and adobe_rgb) and 0 < height * width <= limit)
            return (height, width) if ok else None
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + length
    return None


def pil_decode(data: bytes | bytearray) -> torch.Tensor:
    """Any image PIL reads, as uint8 3×H×W RGB (ImageFolder's ``convert("RGB")``)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(img.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_bytes(path: str) -> bytes:
    """A file's bytes, if it is a regular file of at most `MAX_FILE_BYTES` (a FIFO or a
    device named ``.JPEG`` would block or never end); else `OSError` saying why."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
        data = f.read(st.st_size + 1)  # + 1: a file that grew since is noticed
        while len(data) <= MAX_FILE_BYTES and (more := f.read(1 << 20)):
            data += more
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
    return data


def pil_loader(path: str) -> Image.Image:
    """ImageFolder's loader for the CPU path, with `read_bytes`'s checks: an RGB PIL image."""
    with Image.open(io.BytesIO(read_bytes(path))) as img:
        return img.convert("RGB")


def read_sample(path: str, label: int, seed: int, index: int,
                views: Callable[[int, int, int], list] | None = None) -> Sample | Unreadable:
    """A file as the GPU path wants it: bytes if nvJPEG can decode them, else decoded here;
    with ``views(height, width, seed)`` drawn here too (off the training process)."""
    try:
        data = bytearray(read_bytes(path))  # bytearray: writable, for torch.frombuffer
    except OSError as e:
        return Unreadable(path, e.strerror or str(e))
    size = jpeg_size(data)
    if size is not None:
        sample = Sample(data, True, label, seed, index, path, size)
    else:
        try:
            img = pil_decode(data)
        except Exception as e:  # noqa: BLE001 - any decoder failure means this one file is unusable
            return Unreadable(path, failure_reason(e))
        sample = Sample(img, False, label, seed, index, path, (img.shape[-2], img.shape[-1]))
    if views is not None:
        sample.views = views(*sample.size, seed)
    return sample


def failure_reason(e: BaseException) -> str:
    """A decoder's exception as a short line (no object addresses)."""
    text = one_line(e, limit=None).replace(" <_io.BytesIO object at", "").split(" 0x")[0]
    return text[:120]


def decode_on(samples: list[Sample], device: torch.device) -> tuple[list[torch.Tensor | None], list[Unreadable]]:
    """Decode the encoded samples on ``device`` (nvJPEG in one batch on a GPU, libjpeg-turbo
    on the CPU) and move the others there; a JPEG the batch decoder rejects is retried
    alone, then with PIL, and is unreadable only if all fail."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(samples)
    bad: list[Unreadable] = []
    enc = [i for i, s in enumerate(samples) if s.encoded]
    for i, s in enumerate(samples):
        if not s.encoded:
            out[i] = s.data.to(device, non_blocking=True)
    if not enc:
        return out, bad
    data = {i: torch.frombuffer(samples[i].data, dtype=torch.uint8) for i in enc}
    try:
        decoded = decode_jpeg([data[i] for i in enc], mode=ImageReadMode.RGB, device=device)
        for i, img in zip(enc, decoded):
            out[i] = img
        return out, bad
    except RuntimeError:
        pass
    for i in enc:  # find the file the batch failed on
        try:
            out[i] = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            try:
                out[i] = pil_decode(samples[i].data).to(device)
            except Exception as e:  # noqa: BLE001
                bad.append(Unreadable(samples[i].path, failure_reason(e)))
    return out, bad
