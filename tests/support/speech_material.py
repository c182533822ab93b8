"""Recorded human voices from Debian packages, and silero-vad's wheel from PyPI, for the speech
detector's tests (streamtag.engine.speech).

- warzone2100-data: the game's tutorial, read by a voice actor (``audio/tutorial/*.ogg`` in
  ``base.wz``, a zip; GPL-2+), English sentences of a few seconds each;
- gcin-voice: a woman saying each Mandarin syllable (``ogg/*/3.ogg``; GPL-3 or LGPL-3),
  one syllable at a time with gaps, as alsa-utils' channel names are said;
- alsa-utils: a person saying the channel names (tests.support.content_material.real_voice);
- asterisk-core-sounds-ru-wav and asterisk-prompt-fr-armelle: a telephone system's prompts read
  in Russian and in French by two women (CC-BY-SA-3.0; GPL-2), 8 kHz recordings, held out from
  the content network's fit (benchmarks/content_fit.py fits three other such packages).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from streamtag.audio.files import load_audio

WARZONE = Path("/usr/share/games/warzone2100/base.wz")
GCIN = Path("/usr/share/gcin-voice/ogg")
PROMPTS = {"ru": Path("/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU"),
           "fr": Path("/usr/share/asterisk/sounds/fr")}
PACKAGES = "warzone2100-data gcin-voice asterisk-core-sounds-ru-wav asterisk-prompt-fr-armelle"
MISSING = f"needs Debian's {PACKAGES} (recorded voices): apt-get install {PACKAGES}"
SILERO = "silero-vad==6.2.3"
GAP_S = 0.3  # between clips, as a speaker pauses between phrases


def require() -> None:
    if not WARZONE.is_file() or not GCIN.is_dir() or not all(
            p.is_dir() for p in PROMPTS.values()):
        pytest.skip(MISSING)


def _joined(clips: list[np.ndarray], rate: int) -> np.ndarray:
    gap = np.zeros(round(GAP_S * rate), np.float32)
    return np.concatenate([np.concatenate([c, gap]) for c in clips]).astype(np.float32)


def warzone_tutorial(rate: int, clips: int = 12) -> np.ndarray:
    """The first ``clips`` of the tutorial's sentences, one after another."""
    out = []
    with zipfile.ZipFile(WARZONE) as archive, tempfile.TemporaryDirectory() as folder:
        names = sorted(n for n in archive.namelist()
                       if n.startswith("audio/tutorial/") and n.endswith(".ogg"))
        for name in names[:clips]:
            path = Path(folder) / Path(name).name
            path.write_bytes(archive.read(name))
            out.append(load_audio(path, rate)[0])
    return _joined(out, rate)


def gcin_syllables(rate: int, count: int = 40) -> np.ndarray:
    """``count`` Mandarin syllables spread over the alphabet, said one at a time."""
    paths = sorted(GCIN.glob("*/3.ogg"))
    step = max(1, len(paths) // count)
    return _joined([load_audio(p, rate)[0] for p in paths[::step][:count]], rate)


def telephone_prompts(rate: int, language: str, seconds: float = 40.0) -> np.ndarray:
    """A telephone system's prompts in ``language`` (``PROMPTS``), sentences of a few seconds,
    one after another until ``seconds`` of speech, from every seventh recording."""
    out, total = [], 0
    for path in sorted(p for p in PROMPTS[language].glob("*")
                       if p.suffix in (".wav", ".gsm"))[::7]:
        clip = load_audio(path, rate)[0]
        if len(clip) < rate:  # a word or a short phrase
            continue
        out.append(clip)
        total += len(clip)
        if total >= seconds * rate:
            break
    return _joined(out, rate)


@functools.cache
def silero_wheel() -> Path:
    """silero-vad's wheel, downloaded once per test session with ``pip download --no-deps``
    (its torch requirement is not followed); skips when pip cannot reach PyPI."""
    folder = Path(tempfile.mkdtemp(prefix="streamtag-test-silero-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # gone with the test process
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                           "--only-binary=:all:", "--dest", str(folder), SILERO],
                          capture_output=True, text=True, timeout=300)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"pip download --no-deps {SILERO} failed (no connection to PyPI?): "
                    f"{done.stderr.strip()[-300:]}")
    return wheels[0]
