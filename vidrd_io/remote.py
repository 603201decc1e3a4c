"""Inputs that live at URLs (`s3://`, `gs://`, `http(s)://`, `file://`): read through fsspec, decoded from a cache.

Videos at a URL are downloaded whole into a bounded local cache (least recently used files evicted once the cache
holds more than `VIDRD_CACHE_BYTES`) rather than streamed: decord opens only seekable local files, and a stage
opens one video two or three times (probe, then frames; segment's detector and embedder each read it), each of
which would repeat its range requests over a stream; the trainer rereads the same clips every epoch. Small files
(images, caption tables) are read into memory.

Credentials and endpoints come only from each filesystem's own environment and config (`AWS_*` and
`AWS_ENDPOINT_URL` for s3fs, `GOOGLE_APPLICATION_CREDENTIALS` for gcsfs, fsspec's config files), never from vidrd's
flags. Transfers from `http(s)://` have a timeout and are retried (`RemoteSettings`); s3fs and gcsfs retry on
their own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class RemoteSettings:
    """How URLs are read; each field is read from the environment variable in its metadata (workers inherit it)."""

    cache_dir: str = field(default=os.path.join(os.path.expanduser("~"), ".cache", "vidrd", "remote"),
                           metadata={"env": "VIDRD_CACHE_DIR", "help": "where videos read from URLs are cached"})
    cache_bytes: int = field(default=20 << 30, metadata={
        "env": "VIDRD_CACHE_BYTES", "help": "the cache's bound in bytes: least recently used files go beyond it"})
    http_timeout_s: float = field(default=60.0, metadata={
        "env": "VIDRD_HTTP_TIMEOUT_S", "help": "an http(s) request with no byte for this long fails"})
    http_retries: int = field(default=3, metadata={
        "env": "VIDRD_HTTP_RETRIES", "help": "attempts after the first for an http(s) read that failed"})

    @classmethod
    def from_env(cls) -> "RemoteSettings":
        """Return the settings, each from its environment variable when set."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw:
                try:
                    values[f.name] = type(f.default)(float(raw)) if f.type in ("int", "float") else raw
                except ValueError:
                    raise ValueError(f"${f.metadata['env']} must be a number, got {raw!r}") from None
        return cls(**values)


def is_url(location: str | os.PathLike) -> bool:
    """Return whether a location is a URL (`scheme://...`) rather than a local path."""
    return isinstance(location, str) and bool(_URL_RE.match(location))


def local_path(location: str | os.PathLike) -> str | None:
    """Return the local path of a location (a `file://` URL's path), or None when it is remote."""
    if not is_url(location):
        return os.fspath(location)
    if location.startswith("file://"):
        return location[len("file://"):]
    return None


def local_state_dir(location: str | os.PathLike) -> Path:
    """Return where a run writing to `location` keeps state it appends to: the location itself when local, else a
    directory of the cache named after the URL (object stores cannot append)."""
    local = local_path(location)
    if local is not None:
        return Path(local)
    key = hashlib.blake2b(str(location).encode(), digest_size=8).hexdigest()
    state = Path(RemoteSettings.from_env().cache_dir) / "runs" / key
    state.mkdir(parents=True, exist_ok=True)
    return state


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def filesystem(url: str):
    """Return the fsspec filesystem of a URL and the URL's path within it (http: with `RemoteSettings`' timeout)."""
    import fsspec

    kwargs = {}
    if _is_http(url):
        import aiohttp

        timeout = RemoteSettings.from_env().http_timeout_s
        kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                                     sock_read=timeout)}
    return fsspec.core.url_to_fs(url, **kwargs)


def _with_retries(url: str, action):
    """Return `action()`, retried with backoff on http(s) (fsspec's HTTP filesystem does not retry)."""
    attempts = 1 + (RemoteSettings.from_env().http_retries if _is_http(url) else 0)
    for attempt in range(attempts):
        try:
            return action()
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - aiohttp/OS errors differ by cause; the last one is raised
            if attempt == attempts - 1:
                detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if "timeout" in type(exc).__name__.lower() and _is_http(url):  # fsspec's timeout error says nothing
                    detail += f" (no data for {RemoteSettings.from_env().http_timeout_s:g} s)"
                raise OSError(f"cannot read {url} ({attempts} attempt(s)): {detail}") from None
            log.info("reading %s failed (%s); retrying", url, exc)
            time.sleep(0.2 * 2 ** attempt)


def read_bytes(location: str) -> bytes:
    """Return the bytes of a local file or a URL."""
    local = local_path(location)
    if local is not None:
        with open(local, "rb") as f:
            return f.read()
    fs, path = filesystem(location)
    return _with_retries(location, lambda: _checked_cat(fs, path, location))


def _checked_cat(fs, path: str, url: str) -> bytes:
    data = fs.cat_file(path)
    expected = _size(fs, path)
    if expected is not None and len(data) != expected:  # a server that closed early without aiohttp noticing
        raise OSError(f"truncated: {len(data)} of {expected} bytes")
    return data


def _size(fs, path: str) -> int | None:
    try:
        size = fs.info(path).get("size")
    except Exception:  # noqa: BLE001 - a server that answers no HEAD states no size
        return None
    return int(size) if size else None


def local_copy(location: str | os.PathLike) -> str:
    """Return a local path holding the location's bytes: itself when local, else its copy in the bounded cache.

    A cached copy is keyed by URL and the object's size and version (ETag / mtime when the store gives them), so
    an object replaced at the same URL is fetched again.
    """
    local = local_path(location)
    if local is not None:
        return local
    settings = RemoteSettings.from_env()
    fs, path = filesystem(location)
    try:
        info = _with_retries(location, lambda: fs.info(path))
    except FileNotFoundError:
        if not _is_http(location):
            raise
        # fsspec's HTTP `info` says FileNotFoundError for any failure (a timeout too): the download tells which
        info = {}
    version = [str(info.get(k)) for k in ("size", "ETag", "etag", "LastModified", "mtime", "updated") if info.get(k)]
    key = hashlib.blake2b("\x1f".join([location, *version]).encode(), digest_size=16).hexdigest()
    cache = Path(settings.cache_dir)
    suffix = Path(path.split("?", 1)[0]).suffix[:16]  # decoders that guess the format by name see the extension
    target = cache / f"{key}{suffix}"
    if target.is_file():
        os.utime(target)  # a hit makes it the most recently used
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=cache)
    os.close(fd)
    try:
        _with_retries(location, lambda: _checked_get(fs, path, tmp, info.get("size")))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _evict(cache, settings.cache_bytes, keep=target)
    return str(target)


def _checked_get(fs, path: str, tmp: str, size) -> None:
    fs.get_file(path, tmp)
    got = os.path.getsize(tmp)
    if size and got != int(size):
        raise OSError(f"truncated: {got} of {size} bytes")


def _evict(cache: Path, bound: int, keep: Path, grace_s: float = 60.0) -> None:
    """Delete the least recently used cached files until the cache holds at most `bound` bytes; files used in the
    last `grace_s` seconds stay (another worker may be about to open one), so the bound may be passed briefly."""
    entries = []
    for entry in os.scandir(cache):
        if entry.is_file() and not entry.name.startswith("."):
            st = entry.stat()
            entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    now = time.time()
    for mtime, size, path in sorted(entries):
        if total <= bound:
            break
        if path == str(keep) or now - mtime < grace_s:
            continue
        try:
            os.unlink(path)
            total -= size
        except FileNotFoundError:  # another worker evicted it first
            total -= size
