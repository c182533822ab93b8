"""A model file and its serving: the file contract and manifest, ONNX export and sessions,
inference backends, window reuse and graph passes."""

# What a model file is served with (``inference.InferenceModel``), here so that the daemon's
# config can name them without loading torch.
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")  # int8: the file's int8 graph (streamtag.catalog.quantize)
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N; auto: CUDA when torch sees one
