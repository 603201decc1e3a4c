"""Videos stored inside other files (`shard.tar#KEY.mp4`, `shard.parquet#KEY.mp4`), as local files decoders can open.

video2dataset keeps its videos as tar members (its webdataset output) or as a binary column of a Parquet file (its
parquet output). decord and PyAV read paths, and their seeking readers need a seekable file, so a member is copied
once into a bounded local cache and decoded from there: a cache rather than in-memory bytes because the readers open
a file several times (probe, then frames), and bounded because a run reads many shards. The cache is per process
(each decode worker keeps its own, removed when it exits, or by the next process to start a cache when it
was killed): no locking between workers, and a worker killed by the
runner leaves at most its own temp directory. A forked child (a DataLoader worker) starts its own cache and its own
open tars, since an inherited file offset and directory are shared with the parent. Within a process the readers are
thread-safe: the header walk of a tar holds that tar's lock, and a member's bytes are read through a handle of their own.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
from collections import OrderedDict

from vidrd_io.remote import local_copy

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # what one process keeps extracted; the file being read is never evicted
CONTAINERS = (".tar", ".parquet")
TAR_MEMBER_SEP = "#"

_cache: OrderedDict[str, tuple[str, int]] = OrderedDict()  # key → (local path, bytes), least recently used first
_cache_dir: str | None = None
_tars: OrderedDict[tuple[str, int], tuple[tarfile.TarFile, threading.Lock]] = OrderedDict()
_TARS_KEPT = 8  # open shards per process: one scan of a tar's headers serves its every member
_lock = threading.Lock()  # guards _cache, _cache_dir, _tars and _pid
_pid = os.getpid()


def split_member(location: str) -> tuple[str, str] | None:
    """Return (container file, member) of `archive.tar#member` / `file.parquet#KEY.ext`, or None for a plain path."""
    if TAR_MEMBER_SEP not in location or os.path.exists(location):
        return None
    container, member = location.rsplit(TAR_MEMBER_SEP, 1)
    if not container.lower().endswith(CONTAINERS) or not member:
        return None
    return container, member


def member_bytes(location: str) -> bytes:
    """Return the bytes of a tar member, or of a video2dataset Parquet row's `EXT` column (`file.parquet#KEY.EXT`)."""
    container, member = split_member(location) or (location, "")
    if container.lower().endswith(".tar"):
        return _tar_member(container, member)
    if not container.lower().endswith(".parquet"):
        with open(location, "rb") as f:
            return f.read()
    import pyarrow.parquet as pq

    key, _, ext = member.rpartition(".")
    table = pq.read_table(container, columns=[ext], filters=[("key", "=", key)])
    if table.num_rows == 0 or table[ext][0].as_py() is None:
        raise FileNotFoundError(f"no {ext} of key {key!r} in {container}")
    return table[ext][0].as_py()


def _forked() -> None:
    """Forget what a parent process left (its cache directory, its open tars); call with `_lock` held."""
    global _pid, _cache_dir
    if os.getpid() != _pid:
        _pid = os.getpid()
        _cache.clear()
        _cache_dir = None
        _tars.clear()  # the parent's handles share its file offsets: not closed here, only dropped


def _open_tar(path: str) -> tuple[tarfile.TarFile, threading.Lock]:
    """Return this process's open TarFile of `path` (reopened when the file changed) and the lock guarding it."""
    key = (os.path.abspath(path), os.stat(path).st_mtime_ns)
    with _lock:
        _forked()
        if key in _tars:
            _tars.move_to_end(key)
            return _tars[key]
        opened = _tars[key] = (tarfile.open(path, "r"), threading.Lock())
        while len(_tars) > _TARS_KEPT:
            _tars.popitem(last=False)[1][0].close()
        return opened


def _tar_member(container: str, member: str) -> bytes:
    """Return a tar member's bytes, looking it up by walking the headers (kept for the next lookup) only as far as
    it: `TarFile.getmember` reads every header first, so one cut at the end of a shard would fail its every member."""
    tar, lock = _open_tar(container)
    cut = f"(the tar {os.path.basename(container)} is cut short or corrupt)"
    try:
        with lock:  # the walk moves the shared file offset and extends tar.members
            info = next((i for i in tar if i.name == member and i.isfile()), None)
            if info is not None and info.sparse is not None:
                return tar.extractfile(info).read()
    except (tarfile.TarError, EOFError) as exc:
        raise OSError(f"cannot read {member}: {exc} {cut}") from None
    if info is None:
        raise FileNotFoundError(f"{member} is not a file in {container}")
    # a handle of our own: threads read members in parallel without sharing an offset
    with open(container, "rb") as f:
        f.seek(info.offset_data)
        data = f.read(info.size)
    if len(data) != info.size:
        raise OSError(f"cannot read {member}: {len(data)} of {info.size} bytes {cut}")
    return data


def local_file(location: str | os.PathLike) -> str:
    """Return a local path holding `location`'s bytes: the path itself, a URL's copy in the bounded download cache
    (`remote.local_copy`), or a cached copy of a tar/Parquet member (whose container may itself be at a URL)."""
    location = os.fspath(location)
    parts = split_member(location)
    if parts is None:
        return local_copy(location)
    container, member = parts
    container = local_copy(container)
    location = container + TAR_MEMBER_SEP + member
    if not os.path.isfile(container):
        raise FileNotFoundError(f"no such file: {container}")
    stat = os.stat(container)
    key = hashlib.sha1(f"{os.path.abspath(container)}\0{stat.st_mtime_ns}\0{stat.st_size}\0{member}".encode()).hexdigest()
    with _lock:
        _forked()
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key][0]
    data = member_bytes(location)
    with _lock:
        target = os.path.join(_directory(), key + os.path.splitext(member)[1])
    # written whole under a temporary name, then renamed: a thread reading the same member never sees it half written
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with _lock:
        _forked()
        _cache[key] = (target, len(data))
        _cache.move_to_end(key)
        _evict()
    return target


def _directory() -> str:
    """Return this process's cache directory, made on first use; call with `_lock` held."""
    global _cache_dir
    _forked()
    if _cache_dir is None or not os.path.isdir(_cache_dir):
        _sweep_dead()
        _cache_dir = tempfile.mkdtemp(prefix=f"vidrd-members-{os.getpid()}-")
        atexit.register(_remove, _cache_dir, os.getpid())
    return _cache_dir


def _remove(directory: str, owner: int) -> None:
    # atexit handlers survive fork(): a child that exits normally must not remove its parent's cache
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def _sweep_dead() -> None:
    """Remove the caches of processes that are gone: a decode worker killed by its supervisor never runs atexit."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "vidrd-members-*-*")):
        pid = os.path.basename(path).split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True


def _evict() -> None:
    total = sum(size for _, size in _cache.values())
    while total > CACHE_BYTES and len(_cache) > 1:
        _, (path, size) = _cache.popitem(last=False)
        try:
            os.unlink(path)
        except OSError as exc:  # already gone: nothing to free
            log.debug("cannot remove cached member %s: %s", path, exc)
        total -= size
