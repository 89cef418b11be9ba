"""The data job: a manifest of narrated videos in, WebDataset shards of TVTS samples out.

The folder tree follows the data's way (ARCHITECTURE.md):

    sources/      manifest rows in -> local files of each video and its captions out
    transcripts/  caption files or audio in -> timed words (`Transcript`) out
    media/        a video file in -> its facts (probe) and the frames/audio a sample needs out
    samples/      timed words + video facts in -> K-window sample plans; samples in -> shards out
    demo/         the offline demo corpus generator (`python -m pipeline.demo`), not part of the job

At the top: `run.py` (the only Ray composition), `stages.py` (each stage `batch -> batch`, no Ray),
`ledger.py`, `summary.py`, `config.py`, `errors.py`, `ids.py` (the key rule), `__main__.py`.
"""

PIPELINE_VERSION = "0.1.0"
