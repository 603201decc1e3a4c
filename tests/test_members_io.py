"""Tar/Parquet member reads: safe under threads and across fork(), one reader for stills and videos."""

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidrd_data.mix import dedup
from vidrd_io import members
from vidrd_io.images import read_bytes


def _tar(path, count, size):
    """Write a tar of `count` distinct members of `size` bytes; return {name: bytes}."""
    contents = {}
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
            info = tarfile.TarInfo(f"{i:03d}.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            contents[info.name] = data
    return contents


def test_members_read_from_many_threads_at_once_are_each_their_own_bytes(tmp_path):
    path = tmp_path / "shard.tar"
    contents = _tar(path, 48, 1 << 20)
    names = list(contents) * 2
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda n: read_bytes(f"{path}#{n}"), names))
    wrong = [n for n, data in zip(names, got) if data != contents[n]]
    assert not wrong, f"{len(wrong)} of {len(names)} members read wrong"


def test_a_tar_cut_at_the_end_still_gives_its_earlier_members(tmp_path):
    path = tmp_path / "shard.tar"
    contents = _tar(path, 3, 4096)
    path.write_bytes(path.read_bytes()[: 2 * (512 + 4096) + 512 + 100])  # the third member's data cut
    assert read_bytes(f"{path}#000.mp4") == contents["000.mp4"]
    with pytest.raises(OSError, match="cut short"):
        members.member_bytes(f"{path}#002.mp4")


def test_a_forked_child_keeps_its_own_member_cache(tmp_path):
    path = tmp_path / "shard.tar"
    contents = _tar(path, 2, 4096)
    parent = members.local_file(f"{path}#000.mp4")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a DataLoader worker
        code = 1
        try:
            child = members.local_file(f"{path}#000.mp4")
            ok = child != parent and os.path.dirname(child) != os.path.dirname(parent)
            ok = ok and open(child, "rb").read() == contents["000.mp4"] and not child.endswith(".part")
            code = 0 if ok else 1
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    assert os.read(read, 1) == b"\x00"
    os.waitpid(pid, 0)
    assert open(parent, "rb").read() == contents["000.mp4"]
    assert not [f for f in os.listdir(os.path.dirname(parent)) if f.endswith(".part")]


def test_a_parquet_member_is_fingerprinted_like_the_same_file_on_disk(tmp_path):
    video = hashlib.sha256(b"v").digest() * 100_000  # 3.2 MB: three windows
    pq.write_table(pa.table({"key": ["k1"], "mp4": pa.array([video], pa.binary())}), tmp_path / "00000.parquet")
    loose = tmp_path / "loose.mp4"
    loose.write_bytes(video)
    assert dedup.file_fingerprint(f"{tmp_path / '00000.parquet'}#k1.mp4") == dedup.file_fingerprint(str(loose))


def test_a_tar_member_is_fingerprinted_like_the_same_file_on_disk(tmp_path):
    contents = _tar(tmp_path / "shard.tar", 2, 3 << 20)
    loose = tmp_path / "loose.mp4"
    loose.write_bytes(contents["001.mp4"])
    assert dedup.file_fingerprint(f"{tmp_path / 'shard.tar'}#001.mp4") == dedup.file_fingerprint(str(loose))


def test_an_s3_copy_is_fingerprinted_like_the_same_file_on_disk(tmp_path, s3_bucket):
    import fsspec

    loose = tmp_path / "loose.mp4"
    loose.write_bytes(hashlib.sha256(b"s3").digest() * 100_000)
    fsspec.filesystem("s3").put(str(loose), f"{s3_bucket}/copy.mp4")
    assert dedup.file_fingerprint(f"{s3_bucket}/copy.mp4") == dedup.file_fingerprint(str(loose))
