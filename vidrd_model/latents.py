"""The latent cache: manifest rows encoded once by the frozen VAE and text encoder, for training without them.

    DIR/cache.json                 fingerprint (what the latents depend on) and the settings that built it
    DIR/empty_caption.safetensors  the text encoder's embedding of "" (caption dropout for classifier-free guidance)
    DIR/shard-00000.safetensors    per row j of the shard: `j.text` (77, d) and per clip k `j.k.mean`, `j.k.std`
                                   (C, F, h, w), the VAE posterior's mean and std (unscaled), float32
    DIR/shard-00000.json           the shard's done marker and report: every row `ok` or `failed` with its reason
    DIR/report.json                all shards' counts and failed rows, written when the last shard is done

Shards are written whole (temp file + rename) and the marker after the tensors, so a run killed at any point
resumes by redoing only unfinished shards. Shard i is encoded by process i mod N (accelerate's process index), so
`accelerate launch` spreads a cache over GPUs. The trainer (`--latents DIR`) refuses a cache whose fingerprint
(VAE and text encoder sha256, resolution, frames, fps, split, manifests' digest, media root) differs from its
config's.

Posterior mean and std are kept (not a sample) so training still draws a fresh latent per step, as it does from
pixels. Clips: `clip_policy = "random"` encodes `clips_per_row` seeded random clips of each video row and training
draws one per sample (the paper samples a random clip each time; a few fixed ones approximate that),
`"center"` the centred one. Images and pseudo-videos have one rendering, so one entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidrd_io import fs

from .data import DataError, ManifestClips, read_rows, resize_center_crop

log = logging.getLogger(__name__)

CACHE_FILE = "cache.json"
EMPTY_FILE = "empty_caption.safetensors"
REPORT_FILE = "report.json"
FORMAT = 1
# what the trainer's config must agree on with a cache it reads (clip policy and seed are the cache's own choice)
CHECKED_KEYS = ("vae_sha256", "text_encoder_sha256", "resolution", "num_frames", "sample_fps", "train_split",
                "manifests_sha256", "root")
TEXT_BATCH = 64  # captions per text-encoder call


class CacheError(DataError):
    """A latent cache that cannot feed this run: missing, incomplete, or built for another config."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def marker_name(index: int) -> str:
    return f"shard-{index:05d}.json"


# ---------------------------------------------------------------- fingerprint


def folder_sha256(folder: str | os.PathLike) -> str:
    """Returns the sha256 over a model folder's files (names and contents; not recursive): its weights and config."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{path.name}\0{fs.file_sha256(path)}\0".encode())
    return digest.hexdigest()


def manifests_sha256(manifests: list[str]) -> str:
    """Returns the sha256 over the manifests' files (meta, parts, stats) in the order given."""
    digest = hashlib.sha256()
    for manifest in manifests:
        digest.update(folder_sha256(manifest).encode())
    return digest.hexdigest()


def model_folders(pretrained_model: str, vae: str | None) -> tuple[Path, Path]:
    """Returns the folders of the VAE and text encoder the trainer loads for these settings (load_pipeline's rule)."""
    base = Path(pretrained_model)
    if not base.is_dir():  # a Hub id: its snapshot in the local cache
        from huggingface_hub import snapshot_download

        base = Path(snapshot_download(pretrained_model, local_files_only=True))
    return (Path(vae) if vae else base / "vae"), base / "text_encoder"


def fingerprint(config) -> dict:
    """Returns what a cache's latents depend on, for a `CacheConfig` or (the `CHECKED_KEYS` part) a `TrainConfig`."""
    vae_folder, text_folder = model_folders(config.pretrained_model, config.vae)
    out = {
        "vae_sha256": folder_sha256(vae_folder),
        "text_encoder_sha256": folder_sha256(text_folder),
        "resolution": config.resolution,
        "num_frames": config.num_frames,
        "sample_fps": float(config.sample_fps),
        "train_split": config.train_split,
        "manifests_sha256": manifests_sha256(config.manifests),
        # the media folder relative paths resolve against: another root can mean other videos behind one manifest
        "root": str(Path(config.root).resolve()) if config.root else None,
    }
    if hasattr(config, "clip_policy"):  # what only the cache records: its clip policy and the encoders' dtype
        out["encoder_dtype"] = config.mixed_precision
        clips = config.clips_per_row if config.clip_policy == "random" else 1
        out.update(clip_policy=config.clip_policy, clips_per_row=clips, seed=config.seed)
    return out


# ---------------------------------------------------------------- building


class ClipPixels(torch.utils.data.Dataset):
    """Item i: `(row, clip, pixels (F, 3, R, R) in [-1, 1] or None, error or None)` for the cache's work list."""

    def __init__(self, clips: ManifestClips, work: list[tuple[int, int]], policy: str, seed: int):
        self.clips, self.work, self.policy, self.seed = clips, work, policy, seed

    def __len__(self) -> int:
        return len(self.work)

    def __getitem__(self, i: int):
        row_index, clip = self.work[i]
        row = self.clips.row(row_index)
        rng = np.random.default_rng([self.seed, row_index, clip]) if self.policy == "random" else None
        try:
            frames = self.clips.frames(row, rng)
        except Exception as exc:  # noqa: BLE001 - a row that cannot be decoded becomes a failed row of the report
            return row_index, clip, None, f"{type(exc).__name__}: {exc}"
        pixels = resize_center_crop(torch.from_numpy(frames).permute(0, 3, 1, 2), self.clips.resolution)
        return row_index, clip, pixels.float() / 127.5 - 1.0, None


def load_encoders(pretrained_model: str, vae: str | None, device, dtype):
    """Returns a `VidRDPipeline` holding only the frozen VAE and text encoder (as the trainer loads them), in eval."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from .pipeline import VidRDPipeline
    from .vae import TemporalAutoencoderKL

    vae_model = TemporalAutoencoderKL.from_pretrained_2d(vae) if vae else \
        TemporalAutoencoderKL.from_pretrained_2d(pretrained_model, subfolder="vae")
    pipe = VidRDPipeline(text_encoder=CLIPTextModel.from_pretrained(pretrained_model, subfolder="text_encoder"),
                         tokenizer=CLIPTokenizer.from_pretrained(pretrained_model, subfolder="tokenizer"),
                         unet=None, vae=vae_model, scheduler=None)
    for model in (pipe.vae, pipe.text_encoder):
        model.to(device, dtype).eval().requires_grad_(False)
    return pipe


def build_cache(config) -> Path:
    """Encodes `config.manifests`' rows into `config.out` (this process's shards); returns the cache folder.

    Refuses (CacheError) a folder holding a cache of another fingerprint. Shards already done are skipped.
    """
    from accelerate import PartialState

    from .train_config import check_cache_config

    check_cache_config(config)
    state = PartialState()
    out = Path(config.out)
    rows, left_out = read_rows(config.manifests, config.root, split=config.train_split,
                               allow_partial=config.allow_partial)
    if rows.num_rows == 0:
        raise DataError(f"no usable rows in {', '.join(config.manifests)} ({dict(left_out)})")
    wanted = fingerprint(config)
    num_shards = -(-rows.num_rows // config.shard_size)
    meta = {"format": FORMAT, "fingerprint": wanted, "num_shards": num_shards, "shard_size": config.shard_size,
            "num_rows": rows.num_rows, "left_out": dict(left_out), "config": asdict(config)}
    if (out / CACHE_FILE).is_file():
        existing = json.loads((out / CACHE_FILE).read_text())
        layout = ("num_shards", "shard_size", "num_rows")
        if existing.get("fingerprint") != wanted or any(existing.get(k) != meta[k] for k in layout):
            difference = _difference(existing.get("fingerprint", {}), wanted)
            raise CacheError(f"{out} holds a cache built for other settings ({difference}); choose another --out")
    state.wait_for_everyone()
    if state.is_main_process and not (out / CACHE_FILE).is_file():
        fs.write_json_atomic(out / CACHE_FILE, meta)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    pipe = load_encoders(config.pretrained_model, config.vae, state.device, dtype)
    if state.is_main_process and not (out / EMPTY_FILE).is_file():
        with torch.no_grad():
            empty = pipe.encode_prompt([""], state.device)[0].float().cpu()
        fs.atomic_write(out / EMPTY_FILE, lambda tmp: save_file({"text": empty.contiguous()}, tmp))
    clips = ManifestClips(rows, config.resolution, config.num_frames, config.sample_fps, 0.0, config.seed,
                          train=False)
    for shard in range(state.process_index, num_shards, state.num_processes):
        if (out / marker_name(shard)).is_file():
            continue
        first = shard * config.shard_size
        encode_shard(pipe, clips, range(first, min(first + config.shard_size, rows.num_rows)), config,
                     out, shard, state.device, dtype)
    state.wait_for_everyone()
    if state.is_main_process:
        write_report(out, num_shards, left_out)
    return out


def _difference(old: dict, new: dict) -> str:
    changed = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)!r} ≠ {new[k]!r}" if "sha256" not in k else f"another {k[:-7]}"
                     for k in changed) or "another shard layout"


def encode_shard(pipe, clips: ManifestClips, row_indices: range, config, out: Path, shard: int, device,
                 dtype) -> None:
    """Encodes the rows `row_indices` into shard `shard`: tensors first, then the marker with each row's status."""
    work = []
    for row_index in row_indices:
        kind = clips.rows["kind"][row_index].as_py()
        n = config.clips_per_row if (kind == "video_clip" and config.clip_policy == "random") else 1
        work += [(row_index, k) for k in range(n)]
    loader = torch.utils.data.DataLoader(ClipPixels(clips, work, config.clip_policy, config.seed), batch_size=None,
                                         num_workers=config.num_workers)
    latents: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    errors: dict[int, str] = {}
    with torch.no_grad():
        for row_index, clip, pixels, error in loader:
            if error is not None:
                errors.setdefault(row_index, error)
                continue
            posterior = pipe.vae.encode(pixels.to(device, dtype)).latent_dist  # frames are the batch
            mean, std = (t.float().permute(1, 0, 2, 3).cpu().contiguous() for t in (posterior.mean, posterior.std))
            latents.setdefault(row_index, {})[clip] = (mean, std)
    ok = [i for i in row_indices if i not in errors and i in latents]
    tensors, entries = {}, []
    captions = [(clips.rows["caption"][i].as_py() or "").strip() for i in ok]
    with torch.no_grad():
        texts = [pipe.encode_prompt(captions[j: j + TEXT_BATCH], device).float().cpu()
                 for j in range(0, len(ok), TEXT_BATCH)]
    texts = torch.cat(texts) if texts else None
    for j, row_index in enumerate(ok):
        tensors[f"{j}.text"] = texts[j].contiguous()
        for clip, (mean, std) in sorted(latents[row_index].items()):
            tensors[f"{j}.{clip}.mean"], tensors[f"{j}.{clip}.std"] = mean, std
        entries.append({"sample_id": clips.rows["sample_id"][row_index].as_py(), "clips": len(latents[row_index])})
    metadata = {"entries": json.dumps(entries)}
    fs.atomic_write(out / shard_name(shard), lambda tmp: save_file(tensors, tmp, metadata=metadata))
    report = [{"sample_id": clips.rows["sample_id"][i].as_py(), "status": "failed" if i in errors else "ok",
               "reason": errors.get(i)} for i in row_indices]
    fs.write_json_atomic(out / marker_name(shard), {"shard": shard, "rows": report})
    log.info("shard %d: %d rows ok, %d failed", shard, len(ok), len(errors))


def write_report(out: Path, num_shards: int, left_out: Counter) -> dict:
    """Writes and returns `report.json`: rows ok and failed (with reasons) over all shards, and rows left out."""
    rows = [r for shard in range(num_shards)
            for r in json.loads((out / marker_name(shard)).read_text())["rows"]]
    report = {"ok": sum(r["status"] == "ok" for r in rows), "failed": [r for r in rows if r["status"] == "failed"],
              "left_out": dict(left_out)}
    fs.write_json_atomic(out / REPORT_FILE, report)
    return report


# ---------------------------------------------------------------- reading


class LatentCache:
    """A complete cache folder: its fingerprint and where each sample's tensors are."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / CACHE_FILE).is_file():
            raise CacheError(f"{self.folder} is not a latent cache (no {CACHE_FILE}); build it with vidrd-train cache")
        self.meta = json.loads((self.folder / CACHE_FILE).read_text())
        self.fingerprint = self.meta["fingerprint"]
        missing = [s for s in range(self.meta["num_shards"]) if not (self.folder / marker_name(s)).is_file()]
        if missing:
            raise CacheError(f"{self.folder} is incomplete ({len(missing)} of {self.meta['num_shards']} shards "
                             "missing); rerun vidrd-train cache with the same settings to finish it")
        self.index: dict[str, tuple[int, int, int]] = {}  # sample_id → (shard, entry, clips)
        for shard in range(self.meta["num_shards"]):
            with safe_open(str(self.folder / shard_name(shard)), framework="pt") as f:
                entries = json.loads(f.metadata()["entries"])
            for j, entry in enumerate(entries):
                self.index[entry["sample_id"]] = (shard, j, entry["clips"])
        self.failed = {r["sample_id"]: r["reason"] for shard in range(self.meta["num_shards"])
                       for r in json.loads((self.folder / marker_name(shard)).read_text())["rows"]
                       if r["status"] == "failed"}

    def check(self, expected: dict) -> None:
        """Raises CacheError (one line) when the cache was built for another config than `expected` describes."""
        changed = [k for k in CHECKED_KEYS if self.fingerprint.get(k) != expected.get(k)]
        if changed:
            raise CacheError(f"latent cache {self.folder} does not fit this config: "
                             f"{_difference({k: self.fingerprint.get(k) for k in changed}, {k: expected[k] for k in changed})}; "
                             "rebuild it with vidrd-train cache")

    def rows_in_cache(self, rows: pa.Table) -> tuple[pa.Table, Counter]:
        """Returns the rows the cache holds, and the count of those it does not, by reason."""
        ids = rows["sample_id"].to_pylist()
        keep = [i in self.index for i in ids]
        left_out = Counter("failed to encode" if i in self.failed else "not in the latent cache"
                           for i, k in zip(ids, keep) if not k)
        return rows.filter(pa.array(keep)), left_out


class CachedLatents(torch.utils.data.Dataset):
    """Samples by key `(row, draw)` from a `LatentCache`: `{"latents": (C, F, h, w) unscaled, "encoder_hidden_states"}`.

    The latent is drawn from the cached posterior (mean + std · ε) with noise seeded by (seed, draw), one of the row's
    cached clips is picked from the same seed, and the caption is dropped (the cached "" embedding) with probability
    `uncond_prob`: a sample is a pure function of its key, so resumed runs see the same samples.
    """

    def __init__(self, rows: pa.Table, cache: LatentCache, uncond_prob: float = 0.1, seed: int = 0):
        self.rows, self.cache = rows, cache
        self.uncond_prob, self.seed = uncond_prob, seed
        self.ids = rows["sample_id"].to_pylist()
        self.empty = None
        self._shards: dict[int, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": {}, "empty": None}

    def shard(self, index: int):
        """Returns shard `index` open for reading (memory-mapped), opened once per process."""
        if os.getpid() != self._pid:
            self._shards, self._pid = {}, os.getpid()
        if index not in self._shards:
            self._shards[index] = safe_open(str(self.cache.folder / shard_name(index)), framework="pt")
        return self._shards[index]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        row_index, draw = key
        sample_id = self.ids[row_index]
        shard, j, clips = self.cache.index[sample_id]
        rng = np.random.default_rng([self.seed, draw])
        clip = int(rng.integers(clips))
        dropped = rng.random() < self.uncond_prob
        f = self.shard(shard)
        mean, std = f.get_tensor(f"{j}.{clip}.mean"), f.get_tensor(f"{j}.{clip}.std")
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(int(rng.integers(2 ** 62))))
        if dropped:
            if self.empty is None:
                with safe_open(str(self.cache.folder / EMPTY_FILE), framework="pt") as e:
                    self.empty = e.get_tensor("text")
            text = self.empty
        else:
            text = f.get_tensor(f"{j}.text")
        caption = "" if dropped else (self.rows["caption"][row_index].as_py() or "").strip()
        return {"latents": mean + std * noise, "encoder_hidden_states": text,
                "caption": caption, "sample_id": sample_id, "skipped": []}

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        """Returns a batch: `latents` (B, C, F, h, w), `encoder_hidden_states` (B, 77, d), captions, sample ids."""
        return {
            "latents": torch.stack([s["latents"] for s in samples]),
            "encoder_hidden_states": torch.stack([s["encoder_hidden_states"] for s in samples]),
            "captions": [s["caption"] for s in samples],
            "sample_ids": [s["sample_id"] for s in samples],
            "skipped": [],
        }
