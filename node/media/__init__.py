"""Video: the ffmpeg ladder, running ffmpeg and ffprobe, validating and publishing a transcode."""
