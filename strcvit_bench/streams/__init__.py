"""Streams: the spec, the schedule, the builder and the built-stream reader."""
