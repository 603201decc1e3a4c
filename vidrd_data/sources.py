"""Readers that turn what users have on disk into a stage's input rows (a pyarrow table).

Every reader returns one row per input sample with `source_path` (stored relative to the run's root
when inside it), `source_dataset`, and where known `caption`, `caption_source` and `label`; any other
columns of an input table are carried through to the output manifest. Rows with missing values are
kept: the stage turns them into `failed` rows with a reason rather than dropping them.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_io import remote
from vidrd_io.video import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# A caption, path or label longer than this fails its row rather than being cut short (a cut caption is a silent
# change; CLIP reads 77 tokens and no real path is this long): such a value is a mangled table, not a caption.
MAX_TEXT_CHARS = 10_000


class InputError(Exception):
    """The input cannot be read at all (missing file, unknown format, missing column)."""


def read_table(path: str | os.PathLike, text_columns: tuple[str, ...] = ()) -> pa.Table:
    """Return a CSV, TSV, JSONL or Parquet table (by extension); unreadable rows come back as rows with `_input_error`.

    `text_columns` are read as raw bytes from CSV/TSV (no type guessing: a caption `007` stays `007`), for
    `text_values` to decode strictly. A CSV line with the wrong number of fields and a JSONL line that is not a
    JSON object become rows carrying why in `mf.INPUT_ERROR`, so they fail instead of ending the read.
    """
    name = os.fspath(path)
    suffix = Path(_without_query(name)).suffix.lower()
    try:
        path = Path(remote.local_copy(name))  # a URL: its copy in the local cache
    except FileNotFoundError:
        raise InputError(f"input table not found: {name}") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc}") from None
    if not path.is_file():
        raise InputError(f"input table not found: {name}")
    try:
        if suffix in (".csv", ".tsv"):
            _refuse_utf16(path)
            table = _read_csv(path, "\t" if suffix == ".tsv" else ",", text_columns)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            _refuse_utf16(path)
            table = _read_jsonl(path)
        elif suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:
            raise InputError(f"unknown table format {suffix!r} for {name} (use .csv, .tsv, .jsonl or .parquet)")
        table.column_names  # noqa: B018 - pyarrow decodes column names when first asked: a bad one raises here
        return table
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {name}: its header is not valid UTF-8 (byte at offset {exc.start})") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {name}: {str(exc).splitlines()[0]}") from None


def _without_query(location: str) -> str:
    """Return a URL without its `?query` (a signed URL's); a local path as it is."""
    return location.split("?", 1)[0] if remote.is_url(location) else location


def _refuse_utf16(path: Path) -> None:
    """Raise InputError for a text table with a UTF-16/32 byte-order mark: it is read as UTF-8 only, never guessed."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise InputError(f"{path} is UTF-16/UTF-32 text (it starts with that byte-order mark); save it as UTF-8")


def _read_csv(path: Path, delimiter: str, text_columns: tuple[str, ...]) -> pa.Table:
    bad_lines: list[str] = []

    def keep_bad_line(row) -> str:  # pyarrow's hook: the line is skipped there and comes back as a failed row here
        bad_lines.append(f"line has {row.actual_columns} fields, the header {row.expected_columns}: "
                         f"{row.text[:80]!r}")
        return "skip"

    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,  # quoted multi-line captions
                                         invalid_row_handler=keep_bad_line),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.binary() for c in text_columns}),
    )
    if not bad_lines:
        return table
    filler = pa.table({name: pa.nulls(len(bad_lines), table.schema.field(name).type) for name in table.column_names})
    errors = [None] * table.num_rows + bad_lines
    return pa.concat_tables([table, filler]).append_column(mf.INPUT_ERROR, pa.array(errors, pa.string()))


def _read_jsonl(path: Path) -> pa.Table:
    """Return a JSON Lines table; pyarrow's reader when the file is clean UTF-8 JSON, else line by line.

    pyarrow's JSON reader replaces invalid UTF-8 with U+FFFD and fails the whole file on one bad line, so a file
    it cannot take whole is parsed here line by line (json, surrogateescape): a string with bytes that are not
    UTF-8 keeps them (its column is then read as bytes and that row fails in `text_values`), a line that is not
    a JSON object becomes a row with its reason in `mf.INPUT_ERROR`.
    """
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a UTF-8 byte-order mark is UTF-8: dropped
    try:
        data.decode("utf-8")
        return pajson.read_json(io.BytesIO(data))
    except (UnicodeDecodeError, pa.ArrowInvalid):
        pass
    objects, errors = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8", "surrogateescape"))
            error = None if isinstance(obj, dict) else f"line {number} is a JSON {type(obj).__name__}, not an object"
        except ValueError as exc:
            obj, error = None, f"line {number} is not JSON ({exc})"
        objects.append(obj if error is None else {})
        errors.append(error)
    if all(errors):
        raise InputError(f"cannot read {path}: no line is a JSON object (JSON Lines: one object per line)")
    names = list(dict.fromkeys(k for obj in objects for k in obj))
    columns = {name: _json_column([obj.get(name) for obj in objects]) for name in names}
    if any(errors):
        columns[mf.INPUT_ERROR] = pa.array(errors, pa.string())
    return pa.table(columns)


def _json_column(values: list) -> pa.Array:
    """Return one column of JSON values: strings holding undecodable bytes make it a bytes column; mixed types text."""
    if any(isinstance(v, str) and _has_raw_bytes(v) for v in values):
        return pa.array([None if v is None else _json_text(v).encode("utf-8", "surrogateescape") for v in values],
                        pa.binary())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types; integers past 64 bits
        return pa.array([None if v is None else _json_text(v) for v in values], pa.string())


def _json_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _has_raw_bytes(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def text_values(column: pa.ChunkedArray, what: str) -> tuple[list[str | None], list[str | None]]:
    """Return a column's values as text and, per row, why a value cannot be used (None where it can).

    Bytes are decoded strictly as UTF-8: a value that is not (latin-1, cp1252, UTF-16 text) is not guessed at, its
    row fails with the first bad byte and its offset. A NUL character or more than `MAX_TEXT_CHARS` characters
    fails the row too. Numbers are written out (a label column of class numbers); nested values end the read.
    """
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # a Parquet writer may not have checked UTF-8
        column, kind = pc.cast(column, pa.large_binary()), pa.large_binary()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        values, errors = [], []
        for raw in column.to_pylist():
            try:
                text = None if raw is None else raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                values.append(None)
                errors.append(f"{what} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})")
                continue
            values.append(text)
            errors.append(text_problem(text, what))
    else:
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"the {what} column holds {kind} values, not text") from None
        values = column.to_pylist()
        errors = [text_problem(v, what) for v in values]
    return [None if e else v for v, e in zip(values, errors)], errors


def text_problem(text: str | None, what: str) -> str | None:
    """Return why a text value is unusable (a NUL character, over `MAX_TEXT_CHARS`), or None when it is fine."""
    if text is None:
        return None
    if "\x00" in text:
        return f"{what} contains a NUL character (offset {text.index(chr(0))}): binary or UTF-16 text?"
    if len(text) > MAX_TEXT_CHARS:
        return f"{what} is {len(text)} characters long (limit {MAX_TEXT_CHARS})"
    return None


def _first_errors(*columns: list[str | None]) -> list[str | None]:
    """Return, per row, the first error of several columns of errors (None where none has one)."""
    return [next((e for e in row if e), None) for row in zip(*columns)]


def _store_paths(paths: list[str | None], base: Path | str, root: Path | None) -> list[str | None]:
    """Resolve paths relative to `base` (a directory or a URL's) and store them relative to `root`."""
    out = []
    for p in paths:
        if p is None or p == "":
            out.append(None)
        elif mf.is_uri(p):
            out.append(p)
        elif isinstance(base, str):  # a table at a URL: its relative paths are URLs beside it
            out.append(f"{base.rstrip('/')}/{p.lstrip('/')}")
        else:
            out.append(mf.relativize(p if os.path.isabs(p) else base / p, root))
    return out


def caption_table(
    table_path: str | os.PathLike,
    *,
    path_col: str,
    caption_col: str | None = "caption",
    label_col: str | None = None,
    root: str | os.PathLike | None = None,
    source_dataset: str | None = None,
) -> tuple[pa.Table, Path]:
    """Read a table of media paths (+ captions/labels); return input rows and the root they are stored against.

    Paths are taken relative to `root` when given, else relative to the table's own directory. A row repeating an
    earlier one (same path, caption and label) fails as its duplicate: both would be the same sample.
    """
    table, root_path = _caption_rows(table_path, path_col=path_col, caption_col=caption_col, label_col=label_col,
                                     root=root, source_dataset=source_dataset)
    return _mark_duplicates(table), root_path


def _caption_rows(table_path, *, path_col, caption_col, label_col, root, source_dataset) -> tuple[pa.Table, Path | None]:
    at_url = remote.local_path(table_path) is None
    table_path = os.fspath(table_path) if at_url else Path(remote.local_path(table_path))
    text_cols = tuple(c for c in (path_col, caption_col, label_col) if c is not None)
    table = read_table(table_path, text_columns=text_cols)
    for col in text_cols:
        if col not in table.column_names:
            names = ", ".join(repr(n)[:40] for n in table.column_names[:20])
            raise InputError(f"{table_path} has no column {col!r} (columns: {names})")
    if table.num_rows == 0:
        raise InputError(f"{table_path} has no rows")
    if root is None and at_url:  # paths beside a table at a URL are stored as URLs: no root
        base, root_path = table_path.rsplit("/", 1)[0], None
    else:
        base = Path(root) if root is not None else table_path.parent
        root_path = base = base.resolve()
    paths, errors = text_values(table[path_col], "path")
    reader_errors = table[mf.INPUT_ERROR].to_pylist() if mf.INPUT_ERROR in table.column_names else [None] * len(paths)
    errors = [reader_errors, errors]
    rows = {
        "source_path": _store_paths(paths, base, root_path),
        "source_dataset": [source_dataset or Path(_without_query(str(table_path))).stem] * table.num_rows,
    }
    if caption_col is not None:
        rows["caption"], caption_errors = text_values(table[caption_col], "caption")
        rows["caption_source"] = ["original"] * table.num_rows
        errors.append(caption_errors)
    if label_col is not None:
        rows["label"], label_errors = text_values(table[label_col], "label")
        errors.append(label_errors)
    out = pa.table(_with_input_errors(rows, _first_errors(*errors)))
    used = {path_col, caption_col, label_col, mf.INPUT_ERROR} | set(out.column_names)
    for name in table.column_names:
        if name not in used and name not in mf.BASE_COLUMNS:
            out = out.append_column(name, table[name])
    return out, root_path


def _mark_duplicates(table: pa.Table) -> pa.Table:
    """Return the table with each row that repeats an earlier one (path, caption, label, span) failed as its copy."""
    keys = [c for c in ("source_path", "caption", "label", "start_time", "end_time") if c in table.column_names]
    errors = table[mf.INPUT_ERROR].to_pylist() if mf.INPUT_ERROR in table.column_names else [None] * table.num_rows
    first: dict[tuple, int] = {}
    found = False
    for i, key in enumerate(zip(*(table[c].to_pylist() for c in keys))):
        if errors[i] is not None or key[0] is None:
            continue
        if key in first:
            errors[i] = f"duplicate of input row {first[key]} (same {', '.join(keys)})"
            found = True
        else:
            first[key] = i
    if not found:
        return table
    if mf.INPUT_ERROR in table.column_names:
        table = table.drop_columns([mf.INPUT_ERROR])
    return table.append_column(mf.INPUT_ERROR, pa.array(errors, pa.string()))


def _read_caption_file(path: Path) -> tuple[str | None, str | None]:
    """Return (caption, error): a caption file that is not UTF-8 is an error for that row, not a guess."""
    raw = path.read_bytes()
    try:
        caption = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        return None, f"caption file {path.name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    error = text_problem(caption, f"caption file {path.name}")
    return (None, error) if error else (caption, None)


def _with_input_errors(columns: dict, errors: list[str | None]) -> dict:
    if any(errors):
        columns[mf.INPUT_ERROR] = errors
    return columns


def image_folder(
    folder: str | os.PathLike, *, source_dataset: str | None = None, captions: str | os.PathLike | None = None,
    image_col: str = "image", caption_col: str = "caption",
) -> tuple[pa.Table, Path]:
    """Return every image under `folder` (recursive, sorted) with the caption of its sidecar `.txt` file.

    With `captions`, the captions come from that table instead (its paths relative to `folder`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    if captions is not None:
        return caption_table(captions, path_col=image_col, caption_col=caption_col, root=folder,
                             source_dataset=source_dataset or folder.name)
    root = folder.resolve()
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    captions_read, errors = [], []
    for p in images:
        sidecar = p.with_suffix(".txt")
        caption, error = _read_caption_file(sidecar) if sidecar.is_file() else (None, None)
        captions_read.append(caption)
        errors.append(error)
    columns = {
        "source_path": [p.relative_to(root).as_posix() for p in images],
        "source_dataset": [source_dataset or folder.name] * len(images),
        "caption": captions_read,
        "caption_source": ["original"] * len(images),
    }
    return pa.table(_with_input_errors(columns, errors)), root



def sample_key(member_name: str) -> tuple[str, str]:
    """Return a WebDataset tar member's sample key (its path up to the first dot of its base name) and its lower-case
    extension (`dir/a.b.JPG` → `dir/a`, `.b.jpg`), the grouping webdataset and video2dataset use."""
    base = member_name.rsplit("/", 1)[-1]
    key = member_name[: len(member_name) - len(base)] + base.split(".", 1)[0]
    return key, ("." + base.split(".", 1)[1].lower() if "." in base else "")

def webdataset_shards(pattern: str, *, source_dataset: str | None = None) -> tuple[pa.Table, Path]:
    """Return the image samples of webdataset / img2dataset tar shards (`KEY.jpg` + `KEY.txt` or `KEY.json`).

    `pattern` is a glob (`shards/*.tar`), one tar, or a folder of tars. A shard's sibling Parquet file
    (img2dataset writes `00000.parquet` beside `00000.tar`) contributes its `url` column by `key`.
    Images are stored as `shard.tar#member` and read from the tar when the stage runs.
    """
    import glob
    import json
    import tarfile

    p = Path(pattern)
    tars = sorted(p.glob("*.tar")) if p.is_dir() else sorted(Path(t) for t in glob.glob(pattern))
    if not tars:
        raise InputError(f"no .tar shards match {pattern}")
    root = Path(os.path.commonpath([str(t.resolve().parent) for t in tars]))
    rows: dict[str, list] = {"source_path": [], "caption": [], "key": [], "url": [], mf.INPUT_ERROR: []}
    for tar_path in tars:
        urls = {}
        sidecar = tar_path.with_suffix(".parquet")
        if sidecar.is_file():
            meta = pq.read_table(sidecar)
            if "key" in meta.column_names and "url" in meta.column_names:
                urls = dict(zip(text_values(meta["key"], "key")[0], text_values(meta["url"], "url")[0]))
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(tar_path, "r") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = sample_key(member.name)
                    sample = samples.setdefault(key, {})
                    if ext in IMAGE_EXTENSIONS:
                        sample["image"] = member.name
                    elif ext in (".txt", ".json"):
                        sample[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError) as exc:
            raise InputError(f"cannot read tar shard {tar_path}: {exc}") from None
        stored = mf.relativize(tar_path, root)
        for key in sorted(samples):
            sample = samples[key]
            if "image" not in sample:
                continue
            caption, error = None, None
            try:
                if ".txt" in sample:
                    caption = sample[".txt"].decode("utf-8").strip()
                elif ".json" in sample:
                    caption = json.loads(sample[".json"].decode("utf-8")).get("caption")
            except (UnicodeDecodeError, ValueError, AttributeError) as exc:
                error = f"caption of {key} is not valid UTF-8 text/JSON ({exc.__class__.__name__})"
            if not isinstance(caption, (str, type(None))):
                caption, error = None, f"caption of {key} in its .json is a {type(caption).__name__}, not text"
            error = error or text_problem(caption, f"caption of {key}")
            caption = None if error else caption
            rows["source_path"].append(f"{stored}#{sample['image']}")
            rows["caption"].append(caption)
            rows["key"].append(key.rsplit("/", 1)[-1])
            rows["url"].append(urls.get(key.rsplit("/", 1)[-1]))
            rows[mf.INPUT_ERROR].append(error)
    if not rows["source_path"]:
        raise InputError(f"no image samples in {len(tars)} tar shard(s) matching {pattern}")
    errors = rows.pop(mf.INPUT_ERROR)
    n = len(rows["source_path"])
    columns = {
        "source_path": rows["source_path"],
        "source_dataset": [source_dataset or root.name] * n,
        "caption": rows["caption"],
        "caption_source": ["original"] * n,
        "key": rows["key"],
        "url": rows["url"],
    }
    return pa.table(_with_input_errors(columns, errors)), root


def image_inputs(
    input: str, *, captions=None, image_col: str = "image", caption_col: str = "caption", root=None,
    source_dataset: str | None = None, allow_partial: bool = False,
) -> tuple[pa.Table, Path | None]:
    """Read any image–text input: a manifest of image rows (complete, unless `allow_partial`), a folder (+ captions
    table), tar shards, or a table."""
    path = Path(input)
    if path.is_dir() and mf.is_manifest(path):
        table, base = manifest_rows(path, kind="image", root=root, allow_partial=allow_partial)
        if table.num_rows == 0:
            raise InputError(f"{path} has no ok rows of kind image")
        return table, base
    if path.is_dir() and not any(path.glob("*.tar")):
        return image_folder(path, source_dataset=source_dataset, captions=captions, image_col=image_col,
                            caption_col=caption_col)
    if path.is_dir() or input.endswith(".tar") or any(c in input for c in "*?["):
        return webdataset_shards(input, source_dataset=source_dataset)
    return caption_table(input, path_col=image_col, caption_col=caption_col, root=root, source_dataset=source_dataset)


def humanize_label(label: str) -> str:
    """Return a class label as words: `ApplyEyeMakeup` → `apply eye makeup`, `playing_guitar` → `playing guitar`."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", label.replace("_", " "))
    return " ".join(words.split()).lower()


def video_folder(
    folder: str | os.PathLike, *, layout: str = "flat", source_dataset: str | None = None
) -> tuple[pa.Table, Path]:
    """Return every video under `folder` (recursive, sorted).

    `layout="action"` reads `ROOT/ClassName/video.ext` (UCF-101, Kinetics): the folder name is the label.
    """
    if layout not in ("flat", "action"):
        raise InputError(f"unknown layout {layout!r} (use flat or action)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"video folder not found: {folder}")
    root = folder.resolve()
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not videos:
        raise InputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {folder}")
    rel = [p.relative_to(root) for p in videos]
    cols = {
        "source_path": [r.as_posix() for r in rel],
        "source_dataset": [source_dataset or folder.name] * len(videos),
    }
    if layout == "action":
        cols["label"] = [r.parts[0] if len(r.parts) > 1 else None for r in rel]
    return pa.table(cols), root


def ucf101_split(
    split_file: str | os.PathLike,
    *,
    root: str | os.PathLike,
    class_index: str | os.PathLike | None = None,
    source_dataset: str | None = None,
) -> tuple[pa.Table, Path]:
    """Return the videos a UCF-101 split file lists (`Class/v_Class_gNN_cNN.avi [class number]`), labelled.

    A line's class number is looked up in `classInd.txt` (`class_index`, else the one beside the split file); a line
    without one (the test lists) takes its folder name. Listed videos missing under `root` are kept: they fail
    with a reason.
    """
    split_file, root = Path(split_file), Path(root)
    if not split_file.is_file():
        raise InputError(f"split file not found: {split_file}")
    if not root.is_dir():
        raise InputError(f"video folder not found: {root}")
    class_index = Path(class_index) if class_index is not None else split_file.parent / "classInd.txt"
    classes: dict[int, str] = {}
    if class_index.is_file():
        for number, line in enumerate(_text_lines(class_index), start=1):
            fields = line.split()
            if len(fields) != 2 or not fields[0].isdigit():
                raise InputError(f"{class_index} line {number} is not 'NUMBER ClassName': {line!r}")
            classes[int(fields[0])] = fields[1]
    paths, labels = [], []
    for number, line in enumerate(_text_lines(split_file), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise InputError(f"{split_file} line {number} is not 'Class/video.avi [NUMBER]': {line!r}")
        rel = Path(fields[0])
        if len(fields) == 2 and classes:
            if int(fields[1]) not in classes:
                raise InputError(f"{split_file} line {number}: class {fields[1]} is not in {class_index}")
            labels.append(classes[int(fields[1])])
        else:
            labels.append(rel.parts[0] if len(rel.parts) > 1 else None)
        paths.append(rel.as_posix())
    if not paths:
        raise InputError(f"{split_file} lists no videos")
    table = pa.table(
        {"source_path": paths, "source_dataset": [source_dataset or root.name] * len(paths), "label": labels}
    )
    return table, root.resolve()


def _text_lines(path: Path) -> list[str]:
    """Return the lines of a UTF-8 list file; one that is not UTF-8 is unusable as a whole (InputError)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}, "
                         f"line {line})") from None


def video_list(
    table_path: str | os.PathLike,
    *,
    path_col: str = "path",
    root: str | os.PathLike | None = None,
    source_dataset: str | None = None,
) -> tuple[pa.Table, Path]:
    """Read a list of videos with optional columns: `path[,label][,start,end][,caption]` (CSV/TSV/JSONL/Parquet).

    `start`/`end` (or `start_time`/`end_time`) give a span in seconds; an empty cell means the whole video.
    """
    original = read_table(table_path)  # caption_table drops columns named like base ones (start_time, end_time)
    columns = original.column_names
    span_cols = next(((s, e) for s, e in (("start", "end"), ("start_time", "end_time")) if s in columns or e in columns), None)
    table, base = _caption_rows(
        table_path,
        path_col=path_col,
        caption_col="caption" if "caption" in columns else None,
        label_col="label" if "label" in columns else None,
        root=root,
        source_dataset=source_dataset,
    )
    if span_cols is None:
        return _mark_duplicates(table), base
    if not all(c in columns for c in span_cols):
        raise InputError(f"{table_path} has only one of the span columns {span_cols[0]!r} and {span_cols[1]!r}")
    table = table.drop_columns([c for c in span_cols if c in table.column_names])
    errors = [table[mf.INPUT_ERROR].to_pylist()] if mf.INPUT_ERROR in table.column_names else []
    for name, col in zip(("start_time", "end_time"), span_cols):
        seconds, span_errors = _seconds(original[col], col)
        table = table.append_column(name, pa.array(seconds, pa.float64()))
        errors.append(span_errors)
    if any(e for column in errors for e in column):
        merged = pa.array(_first_errors(*errors), pa.string())
        if mf.INPUT_ERROR in table.column_names:
            table = table.drop_columns([mf.INPUT_ERROR])
        table = table.append_column(mf.INPUT_ERROR, merged)
    return _mark_duplicates(table), base


def _seconds(column: pa.ChunkedArray, name: str) -> tuple[list[float | None], list[str | None]]:
    """Return a span column as seconds and, per row, why a value is not a time (text, NaN, infinite, negative)."""
    values, errors = [], []
    for value in column.to_pylist():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")  # only to parse it or name it in an error
        if isinstance(value, str):
            value = value.strip() or None
        try:
            seconds = None if value is None else float(value)
        except (TypeError, ValueError):
            seconds = None
        if value is not None and (seconds is None or not math.isfinite(seconds) or seconds < 0):
            values.append(None)
            errors.append(f"{name} {str(value)[:40]!r} is not a time in seconds (a finite number ≥ 0)")
        else:
            values.append(seconds)
            errors.append(None)
    return values, errors


def manifest_rows(
    path: str | os.PathLike, *, kind: str | None = None, root=None, allow_partial: bool = False
) -> tuple[pa.Table, Path | None]:
    """Return the ok rows of an existing manifest (optionally one kind) as input rows, paths kept as stored.

    An incomplete manifest raises `IncompleteManifest` (one line) unless `allow_partial`: then its complete parts are
    read, with a warning."""
    m = mf.Manifest.open_for_work(path, root=root, allow_partial=allow_partial)
    table = m.read(status="ok")
    if kind is not None:
        table = table.filter(pc.equal(table["kind"], kind))
    drop = [c for c in ("status", "error", "input_row", "sample_id") if c in table.column_names]
    return table.drop_columns(drop), Path(m.root) if m.root else None


# Readers of other tools' video outputs, tried by the video stages (`caption`, `segment`, `videos`) before their own
# readers: `module:function(input, source_dataset=...)` returning (rows, root), or None when `input` is not its kind.
VIDEO_LAYOUTS = ["vidrd_data.video2dataset:read_input"]


def video_layout(input: str, *, source_dataset: str | None = None) -> tuple[pa.Table, Path] | None:
    """Return the rows and root of `input` read by the first of `VIDEO_LAYOUTS` that knows it, or None."""
    import importlib

    for target in VIDEO_LAYOUTS:
        module, _, function = target.partition(":")
        found = getattr(importlib.import_module(module), function)(input, source_dataset=source_dataset)
        if found is not None:
            return found
    return None
