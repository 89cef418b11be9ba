"""Where inputs come from. In: a manifest (jsonl, csv/tsv, parquet, MERLOT/YT-Temporal JSON, local or any
fsspec URL). Out: `ManifestRow`s (`rows`, `manifest`), then each row's video and captions as local files
(`fetch`: local/fsspec paths, `http` with retries and resume, `youtube` through yt-dlp in a child
process; `fetch_config` holds their shared config and error constructor)."""
