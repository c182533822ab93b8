"""Streams, windows, cross-stream batching, smoothing and tracks: scores in, tag states out.
Knows nothing of sockets."""
