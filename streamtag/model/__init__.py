"""A model file and its serving: the file contract and manifest, ONNX export and sessions,
inference backends, window reuse and graph passes."""
