"""The TVTS model, its losses, the shard loader and the DeepSpeed engine (see ARCHITECTURE.md)."""
