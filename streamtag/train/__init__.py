"""The offline trainer: dataset adapters, the feature cache, metrics and thresholds, the synthetic
benchmark, the training loop and export. Nothing here is imported by the daemon.

Import the submodules directly (``streamtag.train.datasets``, ``.cache``, ``.metrics``,
``.synthetic``); this package imports nothing on its own so that a light tool never pays for torch.
"""
