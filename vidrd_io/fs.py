"""Files written whole or not at all, at local paths or URLs, and content hashes: what every output of vidrd is
written with. This module is the one place that knows how to write to a URL.

Local files are written to a temp file and renamed over the target. Object stores (`s3://`, `gs://`) have no
rename, but they publish an object whole or not at all when its upload completes: a target at a URL is written
to a local temp file and uploaded with one `put`, so a reader never sees a torn object. Where several files make
one unit (a manifest part and its stats), the caller writes the marker last, as video2dataset does with its
`_stats.json`: a part without its marker is never read as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_io import remote


_UMASK = os.umask(0o022)  # read once, at import (setting it is process-wide: not while threads write files)
os.umask(_UMASK)


Location = Path | str  # a local path, or a URL (str)


def location(target: str | os.PathLike) -> Location:
    """Return a local target as a Path (a `file://` URL's too) and any other URL as the str it is."""
    local = remote.local_path(target)
    return Path(local) if local is not None else str(target).rstrip("/")


def join(directory: str | os.PathLike, *names: str) -> Location:
    """Return the location of `names` inside a directory or URL prefix."""
    base = location(directory)
    return base.joinpath(*names) if isinstance(base, Path) else "/".join([base, *names])


def _remote(target: Location):
    return remote.filesystem(target)


def exists(target: str | os.PathLike) -> bool:
    """Return whether a file or directory (at a URL: an object or a prefix holding some) exists."""
    target = location(target)
    if isinstance(target, Path):
        return target.exists()
    fs, path = _remote(target)
    return fs.exists(path)


def is_file(target: str | os.PathLike) -> bool:
    target = location(target)
    if isinstance(target, Path):
        return target.is_file()
    fs, path = _remote(target)
    return fs.isfile(path)


def list_names(directory: str | os.PathLike) -> list[str]:
    """Return the names of the files in a directory or under a URL prefix (one level), [] when there is none."""
    directory = location(directory)
    if isinstance(directory, Path):
        return [p.name for p in directory.iterdir()] if directory.is_dir() else []
    fs, path = _remote(directory)
    fs.invalidate_cache(path)  # s3fs caches listings: another process may have written since
    try:
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []


def remove(target: str | os.PathLike) -> None:
    """Delete a file or object; nothing when it is absent."""
    target = location(target)
    if isinstance(target, Path):
        target.unlink(missing_ok=True)
        return
    fs, path = _remote(target)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def makedirs(directory: str | os.PathLike) -> None:
    """Create a local directory (and parents); a URL prefix needs none (object stores have no directories)."""
    directory = location(directory)
    if isinstance(directory, Path):
        directory.mkdir(parents=True, exist_ok=True)


def read_text(target: str | os.PathLike) -> str:
    target = location(target)
    if isinstance(target, Path):
        return target.read_text(encoding="utf-8")
    return remote.read_bytes(target).decode("utf-8")


def open_read(target: str | os.PathLike):
    """Return a binary file object reading a local file or a URL (seekable: Parquet readers use it)."""
    target = location(target)
    if isinstance(target, Path):
        return open(target, "rb")
    fs, path = _remote(target)
    return fs.open(path, "rb")


def atomic_write(target: str | os.PathLike, write) -> None:
    """Write through `write(tmp_path)` then rename over `target` (at a URL: upload it whole); readers never see a
    torn file."""
    target = location(target)
    if not isinstance(target, Path):
        with tempfile.TemporaryDirectory(prefix="vidrd-upload-") as tmpdir:
            tmp = os.path.join(tmpdir, target.rsplit("/", 1)[-1])
            write(tmp)
            fs, path = _remote(target)
            fs.put_file(tmp, path)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600: give the file the mode open() would have
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(target: str | os.PathLike, data: dict) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")

    atomic_write(target, write)


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet_atomic(target: str | os.PathLike, table: pa.Table) -> None:
    atomic_write(target, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
