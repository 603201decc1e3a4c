"""The embedded demo corpus: written offline and deterministically by `vidrd-data demo OUT`.

    OUT/images/            real photographs (scikit-image's bundled test images) + captions.csv
    OUT/actions/           UCF-101-like `Class/v_Class_gNN_cNN.mp4` clips + classInd.txt / trainlist01.txt,
                           class_prompts.json (class → prompt, for `vidrd-eval ucf101`)
    OUT/long/              long videos with hard scene cuts; their true cut times in cuts.json
    OUT/models/            tiny randomly initialised models in the real on-disk formats
    OUT/recipe.toml        every path above, for the recipe builder

Every byte depends only on this file and the seeds below (no clock, no network).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from vidrd_io.video import write_mp4

log = logging.getLogger(__name__)

# (file in skimage/data, caption we wrote for it)
PHOTOS = [
    ("astronaut.png", "an astronaut in an orange flight suit smiling in front of an american flag"),
    ("camera.png", "a black and white photo of a man standing behind a camera on a tripod"),
    ("chelsea.png", "a ginger tabby cat looking to the side"),
    ("coffee.png", "a cup of coffee on a saucer with a spoon, seen from above"),
    ("coins.png", "old coins laid out in rows on a dark surface"),
    ("rocket.jpg", "a rocket standing on the launch pad under a blue sky"),
    ("motorcycle_left.png", "a red motorcycle parked in a workshop"),
    ("hubble_deep_field.jpg", "distant galaxies scattered across the black of deep space"),
    ("moon.png", "the cratered surface of the moon in black and white"),
    ("brick.png", "a close-up of a rough brick wall"),
    ("grass.png", "a close-up of green grass blades"),
    ("gravel.png", "grey gravel stones on the ground"),
    ("retina.jpg", "a medical photograph of the retina of a human eye"),
    ("page.png", "a page of printed text photographed at an angle"),
    ("clock_motion.png", "a wall clock blurred by camera motion"),
    ("ihc.png", "a microscope image of stained tissue in brown and blue"),
    ("horse.png", "the black silhouette of a horse on a white background"),
    ("color.png", "a colourful abstract pattern of overlapping shapes"),
]

ACTION_CLASSES = {
    "BalloonRise": "a red balloon rising into the sky",
    "PendulumSwing": "a pendulum swinging from side to side",
    "SquareSpin": "a yellow square spinning in place",
}

# per long video: (scene lengths in seconds); cuts are at the cumulative sums
LONG_VIDEOS = {"long_a.mp4": (3.0, 4.5, 4.5), "long_b.mp4": (2.5, 2.5, 4.0, 3.0)}
FPS = 8


def _photo(name: str) -> Image.Image | None:
    try:
        path = resources.files("skimage") / "data" / name
        with resources.as_file(path) as p:
            if not p.is_file():
                return None
            with Image.open(p) as img:
                return img.convert("RGB")
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def _generated_photo(i: int) -> Image.Image:
    """A smooth random picture, used only where scikit-image's photographs are not installed."""
    rng = np.random.default_rng(1000 + i)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((320, 240), Image.BICUBIC)


def write_images(out: Path) -> Path:
    """Write the image–text set; returns the captions table (image, caption)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    real = 0
    for i, (name, caption) in enumerate(PHOTOS):
        img = _photo(name)
        real += img is not None
        img = img or _generated_photo(i)
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        stem = Path(name).stem
        img.save(out / f"{stem}.jpg", quality=90)
        (out / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
        lines.append(f'{stem}.jpg,"{caption}"')
    # two rows that must fail with a reason, never vanish: a truncated file and a missing one
    (out / "truncated.jpg").write_bytes((out / f"{Path(PHOTOS[0][0]).stem}.jpg").read_bytes()[:600])
    lines.append('truncated.jpg,"a photo whose file was cut short"')
    lines.append('missing.jpg,"a photo that is not there"')
    table = out / "captions.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if real < len(PHOTOS):
        log.warning("scikit-image photographs unavailable for %d images: generated stand-ins", len(PHOTOS) - real)
    return table


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    bg = top * (1 - ramp) + bottom * ramp
    texture = rng.normal(0, 12, size=(h // 8, w // 8, 1)).repeat(8, 0).repeat(8, 1)
    return np.clip(np.broadcast_to(bg, (h, w, 3)) + texture, 0, 255)


def _draw_disc(frame: np.ndarray, cy: float, cx: float, r: float, color) -> None:
    yy, xx = np.ogrid[: frame.shape[0], : frame.shape[1]]
    frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = color


def _action_frames(cls: str, seed: int, n: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bg = _background(h, w, rng)
    frames = []
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(n):
        f = bg.copy()
        if cls == "BalloonRise":
            _draw_disc(f, h - 10 - t * (h - 20) / n, w / 2 + 6 * np.sin(t / 3 + phase), 9, (220, 30, 30))
        elif cls == "PendulumSwing":
            angle = 0.8 * np.sin(2 * np.pi * t / n * 2 + phase)
            _draw_disc(f, 10 + 60 * np.cos(angle), w / 2 + 60 * np.sin(angle), 7, (30, 30, 200))
        else:
            a = t * 2 * np.pi / n + phase
            yy, xx = np.mgrid[:h, :w]
            u = (xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)
            v = -(xx - w / 2) * np.sin(a) + (yy - h / 2) * np.cos(a)
            f[(np.abs(u) < 18) & (np.abs(v) < 18)] = (240, 220, 40)
        frames.append(f)
    return np.stack(frames).astype(np.uint8)


def write_actions(out: Path) -> Path:
    """Write an action-recognition set in UCF-101's layout (2 groups × 1 clip per class, 2 s each)."""
    out.mkdir(parents=True, exist_ok=True)
    train = []
    for c, cls in enumerate(ACTION_CLASSES):
        for g in (1, 2):
            rel = f"{cls}/v_{cls}_g{g:02d}_c01.mp4"
            write_mp4(out / rel, _action_frames(cls, seed=100 * c + g, n=2 * FPS), FPS)
            train.append(f"{rel} {c + 1}")
    (out / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(ACTION_CLASSES)))
    (out / "trainlist01.txt").write_text("\n".join(train) + "\n")
    # one prompt per class for `vidrd-eval ucf101 --class-prompts` (the shipped prompts cover UCF-101's classes only)
    (out / "class_prompts.json").write_text(json.dumps(ACTION_CLASSES, indent=2) + "\n")
    return out


def write_long_videos(out: Path) -> Path:
    """Write long videos made of visually distinct scenes joined by hard cuts; `cuts.json` holds the truth."""
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    h, w = 120, 160
    for v, (name, scenes) in enumerate(LONG_VIDEOS.items()):
        frames = []
        for s, seconds in enumerate(scenes):
            rng = np.random.default_rng(10_000 + 100 * v + s)
            bg = _background(h, w, rng)
            color = rng.integers(0, 256, 3)
            n = round(seconds * FPS)
            y0, x0, vy, vx = rng.uniform(20, 100), rng.uniform(20, 140), rng.uniform(-2, 2), rng.uniform(-3, 3)
            for t in range(n):
                f = bg.copy()
                _draw_disc(f, (y0 + vy * t) % h, (x0 + vx * t) % w, 12, color)
                frames.append(f.astype(np.uint8))
        write_mp4(out / name, np.stack(frames), FPS)
        truth[name] = {"cuts_s": [float(x) for x in np.cumsum(scenes)[:-1]], "duration_s": float(sum(scenes))}
    (out / "cuts.json").write_text(json.dumps(truth, indent=2) + "\n")
    return out


def write_demo_corpus(out: str | Path, models: bool = True) -> dict:
    """Write the whole demo corpus under `out`; return the paths of its parts."""
    out = Path(out)
    paths = {
        "images": write_images(out / "images"),
        "actions": write_actions(out / "actions"),
        "long": write_long_videos(out / "long"),
    }
    if models:
        from vidrd_demo.models import write_tiny_models

        paths["models"] = write_tiny_models(out / "models")
    (out / "recipe.toml").write_text(demo_recipe("."))
    return paths


def demo_recipe(root: str) -> str:
    """Return the demo corpus as a recipe whose relative paths start at `root` (relative to the recipe file).

    `manifests/recipes/demo.toml` is this text with root `../../demo_out` (a test keeps them equal).
    """
    return f"""# The demo corpus (`vidrd-data demo`) as a recipe: the paper's three kinds of source in miniature.
[recipe]
name = "demo"
root = "{root}"
val_fraction = 0.2
dedup = "exact"

# image-text pairs -> pseudo-videos (seeded camera motion over each still)
[sources.images]
stage = "pseudo-video"
input = "images/captions.csv"
weight = 1.0
seed = 0

# action-recognition clips (UCF-101 layout, train split 1) -> clips captioned by BLIP-2 (the tiny one)
[sources.actions]
stage = "caption"
input = "actions"
split = "trainlist01.txt"
blip2 = "models/blip2"
prompt = "a video of {{label}},"
weight = 1.0

# long videos -> segments cut by CLIP frame similarity, captioned by MiniGPT-4 (the tiny ones)
[sources.long]
stage = "segment"
input = "long"
embedder = "clip"
clip_config = "models/open_clip/vidrd-tiny-ViT-16.json"
clip_checkpoint = "models/open_clip/open_clip_pytorch_model.bin"
threshold = 0.99        # the random tiny CLIP sees different scenes as ~0.99 similar; real CLIP: the default
captioner = "minigpt4"
minigpt4 = "models/minigpt4/minigpt4.json"
weight = 1.0

[models]
blip2 = "models/blip2"
open_clip_config = "models/open_clip/vidrd-tiny-ViT-16.json"
open_clip_checkpoint = "models/open_clip/open_clip_pytorch_model.bin"
minigpt4_config = "models/minigpt4/minigpt4.json"
stable_diffusion = "models/stable_diffusion"
"""
