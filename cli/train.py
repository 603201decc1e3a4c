"""`vidrd-train`: train VidRD's U-Net, or fine-tune its temporal VAE decoder. Argument parsing and printing only.

Every config key is also an option (`resolution` ↔ `--resolution`): defaults, then the TOML file, then the options.
Under `accelerate launch` (several processes or machines) each process runs this same command.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from cli._app import run_app, typer_app
from rich.console import Console

from vidrd_model.train_config import CacheConfig, TrainConfig, VaeTrainConfig, field_types, load_config

app = typer_app("Train VidRD on vidrd manifests (`train`), or fine-tune its temporal VAE decoder (`vae`).")
out = Console(soft_wrap=True)




def _config_options(config_class, positional: str | None = None):
    """Gives a command one `--key` option per field of `config_class` and passes it the loaded config instead.

    An option left out is None, so the TOML file's value (or the default) stays. With `positional` (a list field),
    that field is the command's arguments and the TOML file is given with `--config`.
    """

    def decorate(command):
        kinds = field_types(config_class)
        options = []
        for f in dataclasses.fields(config_class):
            if f.name == positional:
                options.insert(0, inspect.Parameter(
                    f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[List[str]],
                    # optional here: a --config file may give them; the config's check requires them after merging
                    default=typer.Argument(None, help=f.metadata["help"], show_default=False)))
                continue
            flag = "--" + f.name.replace("_", "-")
            declaration = f"{flag}/--no-{flag[2:]}" if kinds[f.name] is bool else flag
            annotation = Optional[List[str]] if kinds[f.name] is list else Optional[kinds[f.name]]
            default = typer.Option(None, declaration, help=f.metadata["help"], show_default=False)
            options.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                             annotation=annotation))

        @functools.wraps(command)
        def wrapper(config_file: Optional[Path], **values):
            overrides = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()
                         if v is not None and v != () and v != []}
            return command(load_config(config_class, config_file, overrides))

        config_help = "A TOML config (see configs/train_demo.toml); options override it."
        config_argument = inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY if positional else inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Optional[Path],
            default=typer.Option(None, "--config", help=config_help) if positional else
            typer.Argument(None, help=config_help),
        )
        if positional:
            options.insert(1, config_argument)
            wrapper.__signature__ = inspect.Signature(options)
        else:
            wrapper.__signature__ = inspect.Signature([config_argument, *options])
        return wrapper

    return decorate


@app.callback()
def _root_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        logging.getLogger("vidrd_model").setLevel(logging.INFO)


@app.command()
@_config_options(TrainConfig)
def train(config) -> None:
    """Train the video U-Net on manifests (joint image–video); checkpoints load in `vidrd-sample --model`."""
    from vidrd_model.train import train as run_training

    model = run_training(config)
    if _main_process():
            out.print(f"model: [bold]{model}[/]  (metrics {Path(config.output_dir) / 'log.csv'}, "
                  f"curve {Path(config.output_dir) / 'loss.png'}); sample it with: vidrd-sample --model {model}")


@app.command()
@_config_options(VaeTrainConfig)
def vae(config) -> None:
    """Fine-tune the temporal VAE decoder's Temp-Conv layers on video clips, for `vidrd-train train --vae`."""
    from vidrd_model.train_vae import train_vae

    model = train_vae(config)
    if _main_process():
        out.print(f"VAE: [bold]{model}[/]  (metrics {Path(config.output_dir) / 'log.csv'}); put it in a trained "
                  f"model with: vidrd-train train --vae {model}, or sample the release with it: "
                  f"vidrd-sample --base SD --vidrd-ckpt ModelT2V.pth --vae {model}")


@app.command()
@_config_options(CacheConfig, positional="manifests")
def cache(config) -> None:
    """Encode manifests once with the frozen VAE and text encoder, for `vidrd-train train --latents DIR`."""
    from vidrd_model.latents import build_cache

    folder = build_cache(config)
    if _main_process():
        out.print(f"latent cache: [bold]{folder}[/]  (report {folder / 'report.json'}); train on it with: "
                  f"vidrd-train train --latents {folder}")


def _main_process() -> bool:
    """Whether this is the process that prints (under `accelerate launch` every process runs the command)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def main(argv: list[str] | None = None) -> int:
    """Run the app; user errors become one line and exit status 2 (a traceback only with --debug)."""
    from vidrd_data.manifest import ManifestError
    from vidrd_model.data import DataError
    from vidrd_model.train_config import ConfigError

    user_errors = (ConfigError, DataError, ManifestError, FileNotFoundError, FileExistsError, NotADirectoryError)
    return run_app(app, "vidrd-train", argv, user_errors)


if __name__ == "__main__":
    sys.exit(main())
