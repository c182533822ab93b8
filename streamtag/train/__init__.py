"""The offline trainer. Nothing here is imported by the daemon.

Import the submodules directly; this package imports nothing on its own so that a light tool
never pays for torch. Dependencies point one way, from the top of this list to the bottom:

- ``cli``: the ``train``, ``pretrain``, ``eval`` and ``models`` commands;
- ``run``: ``train()``, a training run and its export;
- ``export``: thresholds, test metrics, plots and the model file of a run; ``eval`` of a file;
- ``pretrain``: VQ-VAE pre-training;
- ``loop``: the tagger's training run (``TrainingRun``);
- ``encoder_file``: the pre-trained encoder file (``vqvae.pt``);
- ``epoch``: one training epoch, shared by the tagger and the pre-training;
- ``optim``: schedules, optimisers, early stopping, plateau and per-tag best epochs;
- ``windows``: training windows, evaluation windows, ``predict``;
- ``data``: a run's dataset with its cached features (``TrackData``);
- ``runtime``: run log, device, determinism, checkpoint writes, RNG state, torchrun;
- leaves: ``recipe``, ``datasets``, ``cache`` (features and audio), ``progress``, ``augment``,
  ``metrics`` (with the losses), ``combine``, ``plots``, ``synthetic``, ``track_features``.
"""
