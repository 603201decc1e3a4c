"""Exports of a manifest's ok rows for other trainers: WebDataset tar shards, a Hugging Face `datasets` folder, CSV.

`vidrd-data export MANIFEST --format webdataset|hf|csv --out DIR`. The webdataset and hf formats run through the
stage runner (`vidrd_data.run.runner.run_stage`) with `shards.ExportShards` as the stage: shard i of the manifest's
ok rows becomes one file (`0000i.tar`, `data/train-0000i.parquet`), written atomically before the part's
done-marker, so an export is resumed, sliced (`--shard-index/--num-shards`) and accounted for (every row ok or
failed with why, in `DIR/_export/`) exactly like a stage. See README, "video2dataset inputs and exports".
"""
