"""The data job: manifest -> fetch -> probe -> transcript -> segment -> decode -> shards (see ARCHITECTURE.md)."""

PIPELINE_VERSION = "0.1.0"
