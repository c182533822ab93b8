"""Makes ``tests/data/resume_run/``: a run folder written by the trainer as it was before the
trainer's restructure (issue 16), which ``tests/train/test_run_resume_stored.py`` resumes with the
current code. Run once from the repository root: ``PYTHONPATH=$PWD python
tests/data/make_resume_run.py``.

The recipe is tiny (30 synthetic clips of 2 s, 32 mels, a CP-ResNet with 4 base channels, 2
epochs) and turns on the state a checkpoint carries beyond the weights: the optimiser switch
(``adam_sgd``, SGD from the 3rd epoch, so the resumed epoch switches), the plateau schedule,
SWA with snapshot averaging (the ``swa/`` folder). Paths are relative (the run and cache
folders are made in a temporary working directory), so the stored files hold no path of the
machine that made them; the synthetic data is generated again from its seed on a resume.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

RECIPE = """
name = "resume-stored"
[data]
kind = "synthetic"
n_clips = 30
synthetic = {clip_seconds = 2.0}
[frontend]
preset = "musicnn"
n_mels = 32
hop_length = 512
[model]
architecture = "cp_resnet"
window = 48
hop = 24
[model.options]
base_channels = 4
[train]
epochs = 2
batch_size = 8
windows_per_track = 1
lr = 3e-3
optimizer = "adam_sgd"
sgd_epoch = 2
sgd_lr = 1e-3
schedule = "plateau"
plateau_patience = 1
swa = true
swa_start = 1
swa_every = 1
snapshots = 2
cache_dir = "cache"
seed = 0
deterministic = true
device = "cpu"
"""

# What a resume needs; the model file, plots and predictions are left out (size): the resumed
# run exports them again.
KEEP = ("recipe.toml", "train.log", "checkpoint.pt", "best.pt", "metrics.json")


def main() -> int:
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo))
    from streamtag.train.recipe import parse_recipe

    try:  # the trainer's entry point before and after the restructure
        from streamtag.train.run import train
    except ImportError:
        from streamtag.train.loop import train

    target = Path(__file__).resolve().parent / "resume_run"
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        train(parse_recipe(RECIPE), "run", echo=True)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        for name in KEEP:
            shutil.copy2(Path("run") / name, target / name)
        for sub in ("swa", "per_tag"):
            if Path("run", sub).is_dir():
                shutil.copytree(Path("run") / sub, target / sub)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target}: {total / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
