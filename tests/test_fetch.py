"""dmlib.fetch: everything a chapter needs, downloaded once and verified (README, Chapter 7).

Every download here is local: a copy of the repository's layout served through file:// URLs
or by an http.server on 127.0.0.1. No test touches the network.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from dmlib import fetch, shipped

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
REF = "v-test"


@pytest.fixture
def release(tmp_path):
    """A served copy of the release: tmp/served/REF/checkpoints/..., and its URL template."""
    served = tmp_path / "served"
    shutil.copytree(CHECKPOINTS, served / REF / "checkpoints")
    return served, f"{served.as_uri()}/{{ref}}/{{path}}"


@pytest.fixture
def dest(tmp_path, monkeypatch):
    folder = tmp_path / "dest"
    monkeypatch.setenv("DMLIB_CHECKPOINTS", str(folder))
    return folder


def _names():
    entries = json.loads((CHECKPOINTS / "MANIFEST.json").read_text())
    return sorted(entries), sorted(n.replace(".safetensors", ".json") for n in entries)


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith("."))


def test_the_pinned_manifest_is_the_repositorys():
    digest = hashlib.sha256((CHECKPOINTS / "MANIFEST.json").read_bytes()).hexdigest()
    assert fetch.MANIFEST_SHA256 == digest, (
        "checkpoints/MANIFEST.json changed: set MANIFEST_SHA256 in dmlib/fetch.py to " + digest)


def test_download_into_an_empty_folder_then_offline(release, dest, capsys):
    _, url = release
    assert shipped.shipped_dir() == dest
    assert fetch.checkpoints(repo_url=url, ref=REF) == dest
    weights, records = _names()
    assert sorted(p.name for p in dest.iterdir()) == sorted(weights + records + ["MANIFEST.json"])
    for name in weights + records + ["MANIFEST.json"]:
        assert (dest / name).read_bytes() == (CHECKPOINTS / name).read_bytes()
    assert "sha256 verified" in capsys.readouterr().out
    # what the chapters do with it: a shipped model loads from the fetched folder
    model, record = shipped.load("mnist_noisy_classifier", device="cpu")
    assert record["sha256"] == shipped.manifest()["mnist_noisy_classifier.safetensors"]["sha256"]
    # a second run needs no network: the URL now leads nowhere
    fetch.checkpoints(repo_url="file:///nonexistent/{ref}/{path}", ref=REF)
    assert "already in" in capsys.readouterr().out


def test_served_over_http_on_localhost(release, dest):
    served, _ = release
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{ref}}/{{path}}"
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    finally:
        server.shutdown()
        server.server_close()
    assert (dest / "mnist_vae.safetensors").read_bytes() == (CHECKPOINTS / "mnist_vae.safetensors").read_bytes()


def test_a_corrupted_weights_file_is_refused_and_nothing_half_written(release, dest):
    served, url = release
    bad = served / REF / "checkpoints" / "mnist_uncond.safetensors"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(fetch.FetchError, match=r"mnist_uncond.safetensors does not match.*sha256.*nothing was written"):
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    assert not (dest / "mnist_uncond.safetensors").exists()
    assert not (dest / "MANIFEST.json").exists()  # the folder is not marked complete
    assert _leftovers(dest) == []
    # every file written before the refusal is whole and verified
    for p in dest.iterdir():
        assert p.read_bytes() == (CHECKPOINTS / p.name).read_bytes()


def test_a_truncated_file_and_an_edited_record_are_refused(release, dest):
    served, url = release
    folder = served / REF / "checkpoints"
    weights = folder / "mnist_flow.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(fetch.FetchError, match=r"mnist_flow.safetensors.*bytes, the manifest says"):
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    shutil.copy(CHECKPOINTS / "mnist_flow.safetensors", weights)
    record = folder / "mnist_vae.json"  # after mnist_flow: not fetched yet
    record.write_text(record.read_text().replace('"seed": 0', '"seed": 1', 1))
    with pytest.raises(fetch.FetchError, match=r"mnist_vae.json.*record_sha256"):
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    assert not (dest / "mnist_vae.json").exists() and _leftovers(dest) == []


def test_a_manifest_of_another_release_is_refused(release, dest):
    served, url = release
    manifest = served / REF / "checkpoints" / "MANIFEST.json"
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(fetch.FetchError, match=r"was released with the manifest"):
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    assert not dest.exists() or list(dest.iterdir()) == []
    # a fork: any manifest, but every file still checked against it
    fetch.checkpoints(repo_url=url, ref=REF, manifest_sha256=None, verbose=False)
    assert (dest / "MANIFEST.json").read_bytes() == manifest.read_bytes()


def test_a_damaged_file_in_place_is_an_error_not_overwritten(release, dest):
    _, url = release
    fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    (dest / "mnist_vae.safetensors").write_bytes(b"damaged")
    with pytest.raises(fetch.FetchError, match=r"mnist_vae.safetensors is already there but does not match"):
        fetch.checkpoints(repo_url=url, ref=REF, verbose=False)
    assert (dest / "mnist_vae.safetensors").read_bytes() == b"damaged"


def test_the_checkout_is_verified_not_downloaded(monkeypatch, capsys):
    monkeypatch.delenv("DMLIB_CHECKPOINTS", raising=False)
    assert shipped.shipped_dir() == CHECKPOINTS
    assert fetch.checkpoints(repo_url="file:///nonexistent/{ref}/{path}") == CHECKPOINTS
    assert "a checkout: nothing to fetch" in capsys.readouterr().out


def test_an_install_without_the_repository_uses_a_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DMLIB_CHECKPOINTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    site = tmp_path / "site-packages" / "dmlib"
    site.mkdir(parents=True)
    monkeypatch.setattr(shipped, "__file__", str(site / "shipped.py"))
    expected = tmp_path / "xdg" / "dmlib" / f"shipped-{fetch.__version__}"
    assert shipped.shipped_dir() == shipped.download_dir() == expected


def test_raw_urls():
    assert (fetch.raw_url("https://github.com/ann/dm-book.git", "v0.2.0", "checkpoints/MANIFEST.json")
            == "https://raw.githubusercontent.com/ann/dm-book/v0.2.0/checkpoints/MANIFEST.json")
    assert fetch.raw_url("https://gitlab.example.org/a/b/", "abc", "x") == "https://gitlab.example.org/a/b/-/raw/abc/x"
    assert fetch.raw_url("file:///srv/{ref}/{path}", "v1", "c/d") == "file:///srv/v1/c/d"
    for bad in ("", "../x", "a b"):
        with pytest.raises(ValueError, match="ref must be"):
            fetch.raw_url("https://github.com/a/b", bad, "x")
    with pytest.raises(ValueError, match="repo_url must be"):
        fetch.raw_url("", "v1", "x")


def test_the_installed_commit_is_preferred_to_the_tag(monkeypatch):
    from importlib import metadata

    commit = "0123456789abcdef0123456789abcdef01234567"

    class Dist:
        def read_text(self, name):
            assert name == "direct_url.json"
            return json.dumps({"url": "https://github.com/ann/dm-book", "vcs_info": {
                "vcs": "git", "requested_revision": "v0.2.0", "commit_id": commit}})

    monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    assert fetch.installed_from() == ("https://github.com/ann/dm-book", commit)
    assert fetch._source(None, None) == ("https://github.com/ann/dm-book", commit)
    assert fetch._source("https://github.com/bob/fork", None) == ("https://github.com/bob/fork", fetch.release_ref())
    assert fetch._source(None, "main") == ("https://github.com/ann/dm-book", "main")


def test_no_repository_known_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "installed_from", lambda: (None, None))
    with pytest.raises(fetch.FetchError, match=r"URL is unknown.*Clone the repository"):
        fetch.checkpoints(tmp_path / "c", verbose=False)


def test_everything_and_the_command(release, dest, tmp_path, monkeypatch, capsys):
    _, url = release
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist.npz").write_bytes(b"cached")  # fetch_mnist finds it and downloads nothing
    out = fetch.everything(data, repo_url=url, ref=REF, verbose=False)
    assert out == {"mnist": data / "mnist.npz", "checkpoints": dest}
    shutil.rmtree(dest)
    assert fetch.main(["--data", str(data), "--repo-url", url, "--ref", REF, "-q"]) == 0
    assert (dest / "MANIFEST.json").is_file() and capsys.readouterr().out == ""
    (dest / "mnist_vae.json").write_text("{}")
    assert fetch.main(["--data", str(data), "--repo-url", url, "--ref", REF, "-q"]) == 1
    assert "error: " in capsys.readouterr().err
