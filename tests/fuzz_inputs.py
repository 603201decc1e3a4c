"""Seeded broken and awkward inputs for the fuzzing suite (tests/test_fuzz.py) and its long mode (bench_fuzz).

`write_fuzz_corpus(dir, seed, scale)` mutates the demo corpus's real images and videos (and, when present, the real
clips in ../shared/data/videos) into files no stage has seen: truncations at random offsets, bytes flipped in the
header and mid-stream, wrong extensions, zero-length files, huge-dimension headers, a video with no video stream,
variable frame rate, rotation metadata, odd pixel formats, an H.264 AVI decord gives no timestamps for; and writes
the tables that list them with captions in mixed encodings, NULs, very long strings, NaN/inf/negative spans,
duplicate and missing paths. The same seed writes the same bytes, so a failure reproduces.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from vidrd_demo.corpus import write_demo_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"


@dataclass
class FuzzCorpus:
    """Where the mutated inputs are: a captions table of images and a list of videos, and what each row is."""

    root: Path
    demo: Path
    images_table: Path
    videos_table: Path
    image_cases: list[str] = field(default_factory=list)  # one per table row: what the row exercises
    video_cases: list[str] = field(default_factory=list)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randint(1, len(data) - 1)]


def _flip(data: bytes, rng: random.Random, start: int, stop: int, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, max(start + 1, min(stop, len(out))))
        out[i] ^= rng.randint(1, 255)
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming `width`×`height` with one tiny IDAT: a decompression bomb by its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def huge_jpeg(data: bytes, width: int = 65_000, height: int = 65_000) -> bytes:
    """A JPEG whose start-of-frame claims `width`×`height` (the scan data stays that of the small picture)."""
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        i = out.find(marker)
        if i >= 0:
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    raise ValueError("no start-of-frame marker")


def _odd_images(folder: Path, rng: np.random.Generator) -> dict[str, str]:
    """Awkward but valid stills: alpha, palette with transparency, 16-bit, CMYK, 1-bit, animated, EXIF-rotated."""
    made = {}
    base = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([base, rng.integers(0, 255, (300, 400), dtype=np.uint8)]), "RGBA").save(folder / "rgba.png")
    made["rgba.png"] = "PNG RGBA (alpha)"
    pal = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png", transparency=0)
    made["palette.png"] = "PNG palette with transparency"
    Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    made["gray16.png"] = "PNG 16-bit greyscale"
    Image.fromarray(base).convert("CMYK").save(folder / "cmyk.jpg")
    made["cmyk.jpg"] = "JPEG CMYK"
    Image.fromarray(base).convert("1").save(folder / "bilevel.png")
    made["bilevel.png"] = "PNG 1-bit"
    frames = [Image.fromarray(np.roll(base, k * 40, axis=1)) for k in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    made["animated.gif"] = "animated GIF"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    Image.fromarray(base).save(folder / "exif6.jpg", exif=exif)
    made["exif6.jpg"] = "JPEG with EXIF orientation 6"
    Image.fromarray(base[:, :2]).save(folder / "sliver.png")
    made["sliver.png"] = "PNG 2 pixels wide"
    return made


def _mutated_images(demo: Path, folder: Path, rng: random.Random, scale: int) -> dict[str, str]:
    sources = sorted(p for p in (demo / "images").glob("*.jpg") if p.name != "truncated.jpg")
    made: dict[str, str] = {}
    for k, src in enumerate(sources[:6]):
        shutil.copy(src, folder / f"good{k}.jpg")
        made[f"good{k}.jpg"] = "real JPEG, unchanged"
    for k in range(3 * scale):
        data = rng.choice(sources).read_bytes()
        (folder / f"trunc{k}.jpg").write_bytes(_truncate(data, rng))
        made[f"trunc{k}.jpg"] = "JPEG truncated at a random offset"
        (folder / f"head{k}.jpg").write_bytes(_flip(data, rng, 0, 64, 4))
        made[f"head{k}.jpg"] = "JPEG with bytes flipped in its header"
        (folder / f"mid{k}.jpg").write_bytes(_flip(data, rng, len(data) // 3, 2 * len(data) // 3, 16))
        made[f"mid{k}.jpg"] = "JPEG with bytes flipped mid-stream"
    png = folder / "jpeg_named.png"
    shutil.copy(sources[0], png)
    made[png.name] = "JPEG named .png"
    (folder / "video_named.jpg").write_bytes((demo / "long" / "long_a.mp4").read_bytes())
    made["video_named.jpg"] = "mp4 named .jpg"
    (folder / "text_named.png").write_bytes(b"this is not an image\n" * 10)
    made["text_named.png"] = "text named .png"
    (folder / "empty.jpg").write_bytes(b"")
    made["empty.jpg"] = "zero-length"
    (folder / "huge.png").write_bytes(huge_png())
    made["huge.png"] = "PNG IHDR 100000x100000 (bomb by header)"
    (folder / "huge.jpg").write_bytes(huge_jpeg(sources[1].read_bytes()))
    made["huge.jpg"] = "JPEG SOF 65000x65000"
    made.update(_odd_images(folder, np.random.default_rng(rng.randrange(2**32))))
    return made


# captions as raw bytes: the table is written byte for byte, so what a user's broken export holds is what we read
GOOD_CAPTIONS = [b"a photo of a thing", "caf\u00e9 cr\u00e8me \u2014 \u201cquoted\u201d \U0001f600".encode(),
                 "\u05e9\u05dc\u05d5\u05dd right-to-left".encode(), b"007", b"line one\nline two, with a comma"]
BAD_CAPTIONS = {
    "latin-1 caption": "caf\u00e9 au lait".encode("latin-1"),
    "cp1252 caption": "\u201csmart quotes\u201d".encode("cp1252"),
    "UTF-16 caption (NULs, BOM)": "a caption".encode("utf-16"),
    "NUL in caption": b"before\x00after",
    "very long caption": b"word " * 5_000,
    "empty caption": b"",
    "truncated UTF-8 sequence": "\u00e9t\u00e9".encode()[:-1],
}


def _csv_field(value: bytes) -> bytes:
    return b'"' + value.replace(b'"', b'""') + b'"'


def _write_csv(path: Path, header: list[str], rows: list[list[bytes]]) -> None:
    lines = [",".join(header).encode()] + [b",".join(_csv_field(v) for v in row) for row in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")


def _images_table(folder: Path, made: dict[str, str], rng: random.Random) -> tuple[Path, list[str]]:
    rows, cases = [], []
    for name, case in made.items():
        rows.append([name.encode(), rng.choice(GOOD_CAPTIONS)])
        cases.append(case)
    good = [n for n, c in made.items() if c == "real JPEG, unchanged"]
    for case, caption in BAD_CAPTIONS.items():
        rows.append([rng.choice(good).encode(), caption])
        cases.append(case)
    rows += [[b"missing.jpg", b"no such file"], [good[0].encode(), b"a duplicate row"],
             [good[0].encode(), b"a duplicate row"], [b"", b"no path"], [b"bad\xffpath.jpg", b"non-UTF-8 path"],
             [b"nul\x00path.jpg", b"NUL in path"], [b"../" * 40 + b"etc/passwd", b"path outside the root"]]
    cases += ["missing file", "duplicate row", "duplicate row", "empty path", "non-UTF-8 path", "NUL in path",
              "path outside the root"]
    order = list(range(len(rows)))
    rng.shuffle(order)
    path = folder / "captions.csv"
    _write_csv(path, ["image", "caption"], [rows[i] for i in order])
    return path, [cases[i] for i in order]


def _encode(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, fmt: str | None = None, fps: int = 8,
            times: list[float] | None = None, options: dict | None = None) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.options = options or {}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        source_format = "rgba" if pix_fmt.startswith(("yuva", "rgba")) else "rgb24"
        for i, frame in enumerate(frames):
            if source_format == "rgba":
                frame = np.dstack([frame, np.full(frame.shape[:2], 128 + 10 * (i % 8), np.uint8)])
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=source_format)
            if times is not None:
                video_frame.pts, video_frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _rotate_tkhd(data: bytes) -> bytes:
    """An mp4 whose track header's display matrix turns the picture 90° (what phones write)."""
    out = bytearray(data)
    i = out.index(b"tkhd") + 4
    matrix = i + (40 if out[i] == 0 else 52)
    out[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    return bytes(out)


def _scene_frames(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """n frames of two still scenes, the second the first's negative (a cut halfway, far apart for any embedder):
    content every codec keeps and every stage's rules keep (each shot longer than segment's minimum)."""
    scene = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    return np.stack([255 - scene if i >= n // 2 else scene for i in range(n)])


def _mutated_videos(demo: Path, folder: Path, rng: random.Random, scale: int, shared: bool) -> dict[str, str]:
    made: dict[str, str] = {}
    sources = sorted((demo / "actions").rglob("*.mp4")) + sorted((demo / "long").glob("*.mp4"))
    real = [SHARED_VIDEOS / "counter.mp4"] if shared and (SHARED_VIDEOS / "counter.mp4").is_file() else []
    for k, src in enumerate(sources[:2] + sources[-1:] + real):
        shutil.copy(src, folder / f"good{k}.mp4")
        made[f"good{k}.mp4"] = "real mp4, unchanged" if src in sources else f"real clip {src.name} from ../shared"
    for k in range(2 * scale):
        data = rng.choice(sources + real).read_bytes()
        (folder / f"trunc{k}.mp4").write_bytes(_truncate(data, rng))
        made[f"trunc{k}.mp4"] = "mp4 truncated at a random offset"
        (folder / f"head{k}.mp4").write_bytes(_flip(data, rng, 0, 256, 6))
        made[f"head{k}.mp4"] = "mp4 with bytes flipped in its header"
        (folder / f"mid{k}.mp4").write_bytes(_flip(data, rng, len(data) // 3, 2 * len(data) // 3, 32))
        made[f"mid{k}.mp4"] = "mp4 with bytes flipped mid-stream"
    shutil.copy(sources[0], folder / "mp4_named.avi")
    made["mp4_named.avi"] = "mp4 named .avi"
    shutil.copy(demo / "images" / "astronaut.jpg", folder / "jpeg_named.mp4")
    made["jpeg_named.mp4"] = "JPEG named .mp4"
    (folder / "empty.mp4").write_bytes(b"")
    made["empty.mp4"] = "zero-length"
    _audio_only(folder / "audio_only.mp4")
    made["audio_only.mp4"] = "mp4 with an audio stream only"
    nrng = np.random.default_rng(rng.randrange(2**32))
    frames = _scene_frames(40, 96, 128, nrng)  # 5 s at 8 fps
    times = sorted(nrng.choice(np.arange(0, 6, 0.05), size=40, replace=False).round(2).tolist())  # 20 fps to 1 fps
    _encode(folder / "vfr.mp4", frames, "libx264", "yuv420p", times=times)
    made["vfr.mp4"] = "variable frame rate"
    _encode(folder / "plain.mp4", frames, "libx264", "yuv420p")
    (folder / "rotated.mp4").write_bytes(_rotate_tkhd((folder / "plain.mp4").read_bytes()))
    (folder / "plain.mp4").unlink()
    made["rotated.mp4"] = "rotation metadata (display matrix 90°)"
    _encode(folder / "yuv444.mp4", frames, "libx264", "yuv444p")
    made["yuv444.mp4"] = "H.264 4:4:4"
    _encode(folder / "tenbit.mp4", frames, "libx264", "yuv420p10le")
    made["tenbit.mp4"] = "H.264 10-bit (yuv420p10le)"
    _encode(folder / "alpha.webm", frames, "libvpx-vp9", "yuva420p", options={"deadline": "realtime"})
    made["alpha.webm"] = "VP9 webm with alpha (yuva420p)"
    _encode(folder / "h264.avi", frames, "libx264", "yuv420p", fmt="avi", options={"bf": "2"})
    made["h264.avi"] = "H.264 AVI (decord: no timestamps)"
    _encode(folder / "hevc.mkv", frames, "libx265", "yuv420p", options={"x265-params": "log-level=none"})
    made["hevc.mkv"] = "HEVC in Matroska"
    _encode(folder / "one_frame.mp4", frames[:1], "libx264", "yuv420p")
    made["one_frame.mp4"] = "a single frame"
    return made


def _videos_table(folder: Path, made: dict[str, str], rng: random.Random) -> tuple[Path, list[str]]:
    rows, cases = [], []
    for name, case in made.items():
        rows.append([name.encode(), b"", b""])
        cases.append(case)
    good = [n for n, c in made.items() if c == "real mp4, unchanged"]
    spans = {"NaN span": (b"nan", b"1"), "infinite end": (b"0", b"inf"), "negative start": (b"-1", b"1"),
             "start after end": (b"1.5", b"0.5"), "span past the end": (b"100", b"200"), "text span": (b"soon", b"1"),
             "valid span": (b"0.25", b"1.5")}
    for case, (start, end) in spans.items():
        rows.append([rng.choice(good).encode(), start, end])
        cases.append(case)
    rows += [[good[0].encode(), b"", b""], [b"missing.mp4", b"", b""], [b"bad\xe9name.mp4", b"", b""],
             [b"nul\x00.mp4", b"", b""], [b"", b"", b""]]
    cases += ["duplicate path", "missing file", "non-UTF-8 path", "NUL in path", "empty path"]
    order = list(range(len(rows)))
    rng.shuffle(order)
    path = folder / "videos.csv"
    _write_csv(path, ["path", "start", "end"], [rows[i] for i in order])
    return path, [cases[i] for i in order]


def write_fuzz_corpus(root: Path, seed: int = 0, scale: int = 1, shared: bool = True,
                      demo: Path | None = None) -> FuzzCorpus:
    """Write the demo corpus (unless `demo` names one) and its mutations under `root`; `scale` multiplies the random
    mutations (truncations and flipped bytes) per source kind."""
    root = Path(root)
    rng = random.Random(seed)
    if demo is None:
        demo = root / "demo"
        write_demo_corpus(demo, models=True)
    images, videos = root / "images", root / "videos"
    images.mkdir(parents=True, exist_ok=True)
    videos.mkdir(parents=True, exist_ok=True)
    images_table, image_cases = _images_table(images, _mutated_images(demo, images, rng, scale), rng)
    videos_table, video_cases = _videos_table(videos, _mutated_videos(demo, videos, rng, scale, shared), rng)
    return FuzzCorpus(root, demo, images_table, videos_table, image_cases, video_cases)


def stage_commands(corpus) -> dict[str, tuple[list[str], bool]]:
    """Stage name → (its CLI arguments after the stage name and --out, whether it is a clip stage)."""
    images, videos = str(corpus.images_table), str(corpus.videos_table)
    blip2 = str(corpus.demo / "models" / "blip2")
    return {
        "images": ([images], False),
        "pseudo-video": ([images, "--size", "64", "--frames", "4"], False),
        "videos": ([videos], False),
        "caption": ([videos, "--blip2", blip2, "--beams", "1", "--max-new-tokens", "3", "--device", "cpu",
                     "--decode-in", "threads", "--decode-workers", "1", "--batch-size", "8"], True),
        "segment": ([videos, "--embedder", "histogram", "--device", "cpu"], True),
    }


def run_stage_cli(stage: str, args: list[str], out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `vidrd-data STAGE ARGS --out OUT` in a child process (one worker, one torch thread: OMP_NUM_THREADS)."""
    code = "import sys; from cli.data import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    argv = [stage, *args, "--out", str(out), "--workers", "1", "--no-progress"]
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)
