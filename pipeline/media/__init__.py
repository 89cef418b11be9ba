"""Video files. In: a local media file. Out: its facts (`probe`: duration, fps, size, rotation, streams),
the frames a sample needs as JPEGs and the audio ASR needs (`decode`). `proc` is the one way to run
ffmpeg/ffprobe (time limits, killed process trees, failures classified)."""
