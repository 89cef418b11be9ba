"""TVTS samples. In: a video's timed words and facts. Out: sample plans of K windows (`segment`, per
TVTS-SPEC.md), then WebDataset shards with a sidecar parquet and a stats file written last (`shards`,
which also reads them back for the leakage job)."""
