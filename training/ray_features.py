"""Downstream feature extraction on Ray actors (`downstream.features.ray_actors: N`): the only place the
evaluation composes Ray, and the only evaluation module that imports it.

The driver puts the model (on the CPU) and the source of views (a dataset's video list and view
settings, not its pixels) into Ray's object store once; each of N actors takes the model once in its
constructor and then embeds chunks of whole item groups with the same Ray-free function the in-process
path runs (training/view_embed.py's `embed_groups`, fed by the actor's own DataLoader with
`features.num_workers` decoders). The groups are the ones the in-process path uses, so the batches are
the same; the driver puts the chunks back in item order (`merge`). The features are then the same bit
for bit when an actor runs as many torch threads as this process does (it runs
round(ray_cpus_per_actor)); with another thread count a CPU matmul splits its sums differently and a
value may differ in its last float32 bit (measured: at most 5e-7 on [CLS] values of order 1, before the
cache's float16 rounding, which hides all but the rare value at a rounding edge). Chunks
are handed to whichever actor is free (ray.util.ActorPool), a few per actor so a slow one holds
little; the bar counts items as chunks finish.

Cluster: `features.ray_address` "" starts a private local Ray on 127.0.0.1 for this extraction
(common.ray_env.prepare_ray) and shuts it down after; "auto" or host:port joins a running cluster
(it stays up; the videos' paths must then be readable on its nodes). A Ray that the caller already
initialised is used as it is and left running. `ray_cpus_per_actor` / `ray_gpus_per_actor` are each
actor's resources; with a GPU each actor's `device: auto` picks the one Ray gave it.
"""
from __future__ import annotations

import math

from training.eval_config import FeatureSettings
from training.view_embed import Embedded, embed_groups, merge, resolve_device

__all__ = ["embed_on_actors", "FeatureActor"]

CHUNKS_PER_ACTOR = 4


class FeatureActor:
    """One Ray actor: the model loaded once; `embed(source, groups, views)` -> Embedded of those items."""

    def __init__(self, model, device: str, batch_size: int, num_workers: int, threads: int):
        import torch

        torch.set_num_threads(threads)            # what Ray's num_cpus implies, said here rather than left to env
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size, self.num_workers = batch_size, num_workers

    def embed(self, source, groups: list[list[int]], views: int) -> Embedded:
        return embed_groups(self.model, source, groups, views, self.batch_size, self.num_workers, self.device)


def _chunks(groups: list[list[int]], parts: int) -> list[list[list[int]]]:
    """Consecutive runs of whole groups, about `parts` of them."""
    size = max(1, -(-len(groups) // max(1, parts)))
    return [groups[at:at + size] for at in range(0, len(groups), size)]


def embed_on_actors(model, source, groups: list[list[int]], views: int, settings: FeatureSettings, desc: str,
                    unit: str = "video") -> Embedded:
    """The items of `groups` embedded on `settings.ray_actors` actors, merged in item order."""
    from common.cli import progress
    from common.ray_env import prepare_ray

    joining = prepare_ray(settings.ray_address or None)       # before `import ray`: the local cluster's env
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        if joining:
            ray.init(address=settings.ray_address or None, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=max(1, math.ceil(settings.ray_actors * settings.ray_cpus_per_actor)),
                     include_dashboard=False, log_to_driver=False)
    actors = []
    where = next(model.parameters()).device
    try:
        model_ref = ray.put(model.to("cpu").eval())     # CPU tensors: any actor (GPU or not) can take them
        model.to(where)                                 # the caller's model stays where it was
        source_ref = ray.put(source)
        remote = ray.remote(num_cpus=settings.ray_cpus_per_actor, num_gpus=settings.ray_gpus_per_actor)(FeatureActor)
        threads = max(1, round(settings.ray_cpus_per_actor))
        actors = [remote.remote(model_ref, settings.device, settings.batch_size, settings.num_workers, threads)
                  for _ in range(settings.ray_actors)]
        pool = ActorPool(actors)
        chunks = _chunks(groups, settings.ray_actors * CHUNKS_PER_ACTOR)
        n = sum(len(g) for g in groups)
        parts: list[Embedded] = []
        with progress(total=n, desc=f"{desc} ({settings.ray_actors} Ray actors)", unit=unit) as bar:
            for part in pool.map_unordered(lambda actor, chunk: actor.embed.remote(source_ref, chunk, views), chunks):
                parts.append(part)
                bar.update(len(part.indices))
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return merge(parts, n, views, model.cfg.video.dim)
