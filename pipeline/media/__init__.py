"""Video files. In: a local media file. Out: its facts (`probe`: duration, fps, size, rotation, streams),
the frames a sample needs as JPEGs and the audio ASR needs (`decode`). Each reads in-process with PyAV
(`pyav_probe`, `pyav_decode`, the default) or with the ffprobe/ffmpeg commands; `video_info` and `frames`
are the types and rules both share. `proc` is the one way to run ffmpeg/ffprobe (time limits, killed
process trees, failures classified)."""
