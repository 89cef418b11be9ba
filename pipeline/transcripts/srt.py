"""SubRip (.srt) captions -> words.

`parse_srt(text, name) -> Transcript` (raw words; pipeline.transcripts.load.load_words sorts and cleans).

An SRT file is numbered cues (`1`, `00:00:01,000 --> 00:00:02,500`, text lines, blank line). It shares
the cue reader of pipeline/transcripts/vtt.py: a timing line opens a cue wherever it is, a counter line
written without a blank line before it is dropped, CRLF/LF mixes, a BOM, `<i>`/`<font>` tags, SSA
overrides `{\\an8}` and HTML entities are handled there. SRT has cue timing only, so a cue's words are
spread over its time by character length. SRTs converted from YouTube auto captions keep the rolling
duplicate lines and 10 ms flash cues; they are detected (many cues begin with the previous cue's last
line) and the repeats dropped, so each spoken word comes out once.
"""
from __future__ import annotations

from pipeline.transcripts.types import Transcript
from pipeline.transcripts.vtt import cues_to_words, read_cues


def parse_srt(text: str, name: str = "<srt>") -> Transcript:
    cues, _header = read_cues(text, drop_counter_lines=True)
    return Transcript(cues_to_words(cues), "srt", None)
