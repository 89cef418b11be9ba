"""The offline demo corpus generator (`python -m pipeline.demo --out DIR`), not part of the data job.

In: a seed and a size. Out: narrated videos of coloured shapes (ffmpeg + espeak-ng), their captions in
each supported format (or none, for ASR), a manifest, the narration script, and a downstream evaluation
set with planted leaks. `corpus` (the command and the folder layout), `script` (what each video shows
and says), `render` (frames + speech -> mp4), `captions` (VTT/SRT/MERLOT writers), `downstream`."""
