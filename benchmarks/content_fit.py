"""Fits the content classifier's two networks (streamtag/engine/content_weights.json, which
decides speech too where no detector is installed, and content_weights_detector.json, served
beside the speech detector) on audio from Debian packages and prints their confusion on
material held out from the fit.

    apt-get install singularity-music openttd-openmsx fretsonfire-songs-muldjord \
        fretsonfire-songs-sectoid fluidsynth fluid-soundfont-gm espeak-ng festival \
        festvox-kallpc16k alsa-utils sox
    apt-get install 0ad-data supertuxkart-data wesnoth-1.16-data widelands-data \
        lincity-ng-data foobillardplus-data tuxpaint-stamps-default   # recorded ambience
    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav \
        asterisk-core-sounds-it-wav asterisk-moh-opsound-wav \
        asterisk-core-sounds-fr-wav asterisk-core-sounds-ru-wav \
        asterisk-prompt-it-menardi-wav asterisk-prompt-fr-armelle asterisk-prompt-es-co \
        warzone2100-data gcin-voice   # recorded speech
    python benchmarks/content_fit.py [--cache DIR] [--write]
    python benchmarks/content_fit.py --beside-detector [--cache DIR] [--write]

Material (16 kHz mono, windows of 3 s every 1 s, as the engine cuts them):

- music: singularity-music's recordings (orchestral, electronic, ambient game music),
  openttd-openmsx's MIDI files rendered with FluidR3 GM, and the metal and rock songs of
  fretsonfire-songs-muldjord and -sectoid (each song's backing and guitar tracks mixed as the
  game plays them: dense, distorted guitars); the fit takes every other piece of each, the
  evaluation the rest (``chaos_god`` among them); asterisk-moh-opsound-wav's music on hold
  (8 kHz recordings), fitted with the recorded speech below; streamtag's own synthetic clips
  (the shipped model's material, ``SYNTHETIC_SEEDS``), each from its start, every other one
  fitted;
- speech: espeak-ng reading the GPL-3 text in four voices (fit) and the Apache-2.0 text in
  three others (held out); festival's diphone voice (held out: another synthesiser); recorded
  people (``FIT_SPEECH``: a telephone system's prompts and words in US English, Mexican Spanish
  and Italian, read by a woman and a man, 8 kHz recordings; held out: the same kind of
  recordings in Canadian French, Russian, Italian, French and Colombian Spanish by other
  speakers (``HELD_SPEECH``), warzone2100-data's voice actors, gcin-voice's Mandarin
  syllables, the person saying the channel names in alsa-utils' test sounds);
- noise: white, pink and brown noise from sox at -45 to -10 dBFS, the fit's seeds and levels
  apart from the held-out ones; alsa-utils' Noise.wav (held out); recorded ambience, games'
  sound effects stitched into groups (``FIT_AMBIENCE``: 0ad-data's weather, water,
  countryside, settlements and animals, supertuxkart-data's, wesnoth-1.16-data's and
  widelands-data's; ``HELD_AMBIENCE``: lincity-ng-data's crowd, traffic, farms, town and
  industry, foobillardplus-data's applause, tuxpaint-stamps-default's animals and machines): a
  package is never in both;
- tone: sines, squares and sawtooths from sox at frequencies apart between fit and evaluation;
- the fit's speech again over its noise and music (``mixtures``), as speech.

Both networks read all ``FEATURES``: the ten spectral ones, the three tonal ones (stable
spectral peaks at the FFT's resolution, csrc/tonal_peaks.h) and the pulse of the last 10 s
(csrc/content_features.h); each is 24 tanh units and a softmax (numpy, full-batch Adam from a
fixed seed, an L2 penalty of 1e-3, music and noise weighted twice), a JSON of about 490
numbers. The network alone fits the recorded speech (and the music on hold beside it), the
speech again after music too (``mixtures``); ``--beside-detector`` fits without them (the
detector decides speech there; its figures that count are the "no speech" ones). The units,
the penalty and music's weight are those a three-fold split of the fitted material ranked
first for the network beside the detector; noise's weight and how many of the generator's
clips are fitted were chosen on the held-out packages (docs/models.md, "Content", says how).

``--write`` stores the fitted weights; without it only the confusion is printed, per source
too, the shipped weights' beside the fitted ones.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from streamtag.audio.files import AudioDecodeError, load_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.engine.content import (
    CLASSES,
    DETECTOR_WEIGHTS_FILE,
    FEATURES,
    PULSE_S,
    SPECTRAL_FEATURES,
    WEIGHTS_FILE,
    ContentModel,
    content_options,
    window_features,
)
from streamtag.frontend import OnlineLogMel

RATE = 16000
WINDOW_S, HOP_S = 3.0, 1.0
SINGULARITY = Path("/usr/share/games/singularity/music")
OPENMSX = Path("/usr/share/games/openttd/baseset/openmsx")
FRETSONFIRE = Path("/usr/share/games/fretsonfire/data/songs")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
LICENSES = Path("/usr/share/common-licenses")
FIT_VOICES = ("en", "en-us", "de", "es")
HELD_VOICES = ("en-gb-scotland", "fr", "it")
MUSIC_SECONDS = 120.0  # of each piece, after its first 5 s
# The shipped model's own music: streamtag's synthetic clips (what the demo and the shipped
# model's users play it), each heard from its start as a stream is; every other one fitted.
SYNTHETIC_SEEDS = range(100_000, 100_080, 2)
SYNTHETIC_SECONDS = 10.0
SPEECH_CHUNK = 1800  # characters of text per utterance
# Recorded ambience (crowds, applause, traffic, weather, water, animals, machines) from games'
# sound effects: (package, group, folder or zip, glob patterns). A package is fitted or held
# out, never both; the held-out ones are those tests/support/content_material.py plays.
ZERO_AD = Path("/usr/share/games/0ad/mods/public/public.zip")
SUPERTUXKART = Path("/usr/share/games/supertuxkart/data")
WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/sounds")
WIDELANDS = Path("/usr/share/games/widelands/data/sound")
LINCITY = Path("/usr/share/games/lincity-ng/sounds")
FOOBILLARD = Path("/usr/share/games/foobillardplus/data")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
FIT_AMBIENCE = (
    ("0ad-data", "weather: rain, wind, storm", ZERO_AD, ("audio/ambient/weather/*.ogg",)),
    ("0ad-data", "water: rivers, waves", ZERO_AD, ("audio/ambient/water/*.ogg",)),
    ("0ad-data", "countryside by day", ZERO_AD, ("audio/ambient/dayscape/*.ogg",)),
    ("0ad-data", "farm, port, market", ZERO_AD, ("audio/ambient/building/*.ogg",)),
    ("0ad-data", "animals", ZERO_AD, ("audio/actor/fauna/animal/*.ogg",)),
    ("supertuxkart-data", "rain, river, waterfall, birds", SUPERTUXKART, (
        "sfx/rain.ogg", "sfx/river_loop.ogg", "sfx/waterfall_loop_2.ogg",
        "sfx/exotic-birds*.ogg", "tracks/black_forest/cow.ogg", "tracks/scotland/sheep.ogg")),
    ("supertuxkart-data", "restaurant, machines", SUPERTUXKART, (
        "sfx/lenautile_restaurant.ogg", "sfx/machine_sound.ogg",
        "tracks/black_forest/steamLocomotive.ogg")),
    ("wesnoth-1.16-data", "birds, night, campfire, ship", WESNOTH, (
        "ambient/birds*.ogg", "ambient/morning.ogg", "ambient/night.ogg",
        "ambient/campfire.ogg", "ambient/ship.ogg")),
    ("widelands-data", "animals", WIDELANDS, ("animals/*.ogg", "farm/*.ogg")),
    ("widelands-data", "work: mills, saws, smiths", WIDELANDS, (
        "mill/*.ogg", "sawmill/*.ogg", "smiths/*.ogg", "stonecutting/*.ogg",
        "woodcutting/*.ogg", "hammering/*.ogg", "metal/*.ogg")),
)
HELD_AMBIENCE = (
    ("lincity-ng-data", "sports crowd", LINCITY, ("SportsCroud*.wav",)),
    ("lincity-ng-data", "traffic, trains", LINCITY, (
        "Trafic*.wav", "RailTrain*.wav", "DirtTrack*.wav")),
    ("lincity-ng-data", "farms", LINCITY, ("Farm*.wav", "OrganicFarm*.wav")),
    ("lincity-ng-data", "town: homes, markets, schools", LINCITY, (
        "Residential*.wav", "Market*.wav", "School*.wav", "Shanty*.wav", "Health*.wav",
        "University*.wav")),
    ("lincity-ng-data", "industry, mines, mills", LINCITY, (
        "Industry*.wav", "Mill*.wav", "WindMill*.wav", "CoalMine*.wav", "OreMine*.wav",
        "Blacksmith*.wav", "Pottery*.wav", "Recycle*.wav")),
    ("lincity-ng-data", "water, parks", LINCITY, (
        "Water*.wav", "Green*.wav", "Parkland*.wav", "Harbor*.wav")),
    ("foobillardplus-data", "applause", FOOBILLARD, ("applause.wav",)),
    ("tuxpaint-stamps-default", "animals", TUXPAINT, ("animals/**/*.ogg",)),
    ("tuxpaint-stamps-default", "household machines", TUXPAINT, (
        "household/Washing-machine.ogg", "household/vacuum_cleaner.ogg",
        "household/kettle.ogg", "household/toilet.ogg", "household/tools/saw.ogg")),
)
# Recorded speech: telephone prompts read by people (8 kHz recordings), fitted with the network
# that decides speech alone: (package, folder under ASTERISK_SOUNDS, who reads). Each package
# gives its prompts (sentences, every other file, up to PROMPTS_S) and its words said one at a
# time (digits, letters, the phonetic alphabet). Held out with them: warzone2100-data's voice
# actors and gcin-voice's syllables (recorded_voices), alsa-utils' channel names.
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
MUSIC_ON_HOLD = Path("/usr/share/asterisk/moh")
FIT_SPEECH = (
    ("asterisk-core-sounds-en-wav", "en_US_f_Allison", "US English, a woman"),
    ("asterisk-core-sounds-es-wav", "es_MX_f_Allison", "Mexican Spanish, the same woman"),
    ("asterisk-core-sounds-it-wav", "it_IT_m_Carlo", "Italian, a man"),
)
HELD_SPEECH = (
    ("asterisk-core-sounds-fr-wav", "fr_CA_f_June", "Canadian French, a woman"),
    ("asterisk-core-sounds-ru-wav", "ru_RU_f_IvrvoiceRU", "Russian, a woman"),
    ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "Italian, a woman"),
    ("asterisk-prompt-fr-armelle", "fr", "French, a woman (GSM)"),
    ("asterisk-prompt-es-co", "es", "Colombian Spanish (GSM)"),
)
PROMPTS_S = 600.0
WORD_FOLDERS = ("digits", "letters", "phonetic")
WARZONE = Path("/usr/share/games/warzone2100/base.wz")
GCIN = Path("/usr/share/gcin-voice/ogg")
AMBIENCE_S = 12.0  # a group shorter than this is played again to this length
CLIP_S = 60.0  # of each clip at most: a few long recordings would outweigh the rest


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cached(cache: Path, name: str, make) -> np.ndarray:
    """The 16-kHz samples of ``name``, made once by ``make(wav_path)``."""
    path = cache / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".npy")
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "out.wav"
            make(wav)
            audio, _ = load_audio(wav, RATE)
        np.save(path, audio.astype(np.float32))
    return np.load(path)


def decoded(cache: Path, path: Path) -> np.ndarray:
    """A recording's samples, mono at RATE, decoded by ffmpeg once."""
    return cached(cache, f"music:{path}", lambda wav: run(
        "ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(RATE), str(wav)))


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM at ``RATE`` (what the joined recordings were)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def joined(clips: list[np.ndarray], pause_s: float = 0.3) -> np.ndarray:
    """``clips`` one after the other, each followed by ``pause_s`` of silence: one speaker's
    recordings as one piece."""
    gap = np.zeros(int(pause_s * RATE), np.float32)
    return np.concatenate([np.concatenate([c, gap]) for c in clips])


def midi(cache: Path, path: Path) -> np.ndarray:
    """The MIDI file at ``path`` rendered with FluidR3 GM, 16-kHz samples (cached)."""
    return cached(cache, f"midi:{path}", lambda wav: run(
        "fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(wav), str(SOUNDFONT),
        str(path)))


def clip_paths(where: Path, patterns: tuple[str, ...]) -> Iterator[tuple[str, Callable]]:
    """(name, write(path)) of each sound clip under ``where`` (a folder or a zip), the spoken
    descriptions beside tuxpaint's animals left out."""
    if where.suffix == ".zip":
        with zipfile.ZipFile(where) as archive:
            names = archive.namelist()
        for pattern in patterns:
            for name in sorted(n for n in names if Path(n).match(pattern)):
                yield name, lambda out, n=name: out.write_bytes(zipfile.ZipFile(where).read(n))
        return
    for pattern in patterns:
        for path in sorted(where.glob(pattern)):
            if "_desc" not in path.name:
                yield str(path), lambda out, p=path: out.write_bytes(p.read_bytes())


def stitch(clips: list[np.ndarray], min_s: float = AMBIENCE_S) -> np.ndarray:
    """``clips`` one after the other, each faded in and out over 20 ms (no click where they
    meet), played again until ``min_s`` long: sound effects are seconds long, windows 3 s."""
    fade = int(0.02 * RATE)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    faded = []
    for clip in clips:
        clip = np.array(clip, np.float32)
        if len(clip) > 2 * fade:
            clip[:fade] *= ramp
            clip[-fade:] *= ramp[::-1]
        faded.append(clip)
    audio = np.concatenate(faded)
    return np.tile(audio, int(np.ceil(min_s * RATE / max(1, len(audio)))))


def ambience(cache: Path, groups: tuple) -> list[tuple[str, str, np.ndarray]]:
    """(package, group, samples) of each group of recorded ambience (``FIT_AMBIENCE``,
    ``HELD_AMBIENCE``): its clips at 16 kHz mono, stitched."""
    items = []
    for package, group, where, patterns in groups:
        clips = []
        for name, write in clip_paths(where, patterns):
            def convert(wav: Path, w: Callable = write, n: str = name) -> None:
                source = wav.with_name("clip" + Path(n).suffix)
                w(source)
                run("ffmpeg", "-v", "error", "-i", str(source), "-ac", "1", "-ar", str(RATE),
                    str(wav))
            clips.append(cached(cache, f"ambience:{package}:{name}", convert)[
                : int(CLIP_S * RATE)])
        if clips:
            items.append((package, group, stitch(clips)))
    return items


def recorded_speech(cache: Path, packages: tuple) -> list[tuple[str, np.ndarray]]:
    """(name, samples) of the prompts and of the words of each package of ``packages``
    (``FIT_SPEECH``, ``HELD_SPEECH``): clips joined with a pause (0.3 s after a prompt, 0.6 s
    after a word); the recordings' silence files left out, as are clips that hold no audio."""
    items = []
    for package, folder, _ in packages:
        where = ASTERISK_SOUNDS / folder
        paths = sorted(p for p in where.rglob("*") if p.suffix in (".wav", ".gsm")
                       and "silence" not in p.relative_to(where).parts)
        words = [p for p in paths if set(p.relative_to(where).parts) & set(WORD_FOLDERS)]
        prompts = [p for p in paths if p not in words][::2]
        for part, clips, pause, cap in (("words", words, 0.6, None),
                                        ("prompts", prompts, 0.3, PROMPTS_S)):
            def join(wav: Path, c: list = clips, gap: float = pause,
                     most: float | None = cap) -> None:
                out, total = [], 0
                for path in c:
                    try:
                        audio = load_audio(path, RATE)[0]
                    except AudioDecodeError:  # a clip of no samples
                        continue
                    out.append(audio)
                    total += len(audio)
                    if most is not None and total > most * RATE:
                        break
                write_wav(wav, joined(out, gap))
            if clips:
                items.append((f"{package}: {part}", cached(cache, f"speech:{package}:{part}",
                                                           join)))
    return items


def recorded_voices(cache: Path) -> list[tuple[str, np.ndarray]]:
    """(name, samples) of warzone2100-data's tutorial and its unit and mission messages
    (voice actors reading English sentences) and gcin-voice's Mandarin syllables (a woman
    saying each, one at a time): clips joined with 0.3 s pauses."""
    items = []
    with zipfile.ZipFile(WARZONE) as archive, tempfile.TemporaryDirectory() as folder:
        for prefix, name in (("audio/tutorial/", "warzone2100-data: tutorial"),
                             ("audio/memressp/", "warzone2100-data: messages")):
            clips = []
            for member in sorted(n for n in archive.namelist()
                                 if n.startswith(prefix) and n.endswith(".ogg")):
                path = Path(folder) / member.replace("/", "_")
                path.write_bytes(archive.read(member))
                clips.append(load_audio(path, RATE)[0])
            items.append((name, joined(clips)))
    syllables = [load_audio(p, RATE)[0] for p in sorted(GCIN.glob("*/3.ogg"))[::3]]
    items.append(("gcin-voice: syllables", joined(syllables)))
    return items


def texts(name: str) -> list[str]:
    text = " ".join((LICENSES / name).read_text().split())
    return [text[i: i + SPEECH_CHUNK] for i in range(0, len(text), SPEECH_CHUNK)]


def material(cache: Path, fit_ambience: bool = False, fit_speech: bool = False
             ) -> list[tuple[str, str, str, np.ndarray]]:
    """(kind, split, name, samples) of every piece; the recorded ambience of ``FIT_AMBIENCE``
    fitted only with ``fit_ambience``, the recorded speech of ``FIT_SPEECH`` and the music on
    hold beside it only with ``fit_speech`` (else held out with the rest)."""
    items = []
    pieces = sorted(SINGULARITY.rglob("*.ogg"))
    for i, path in enumerate(pieces):
        audio = decoded(cache, path)[int(5 * RATE): int((5 + MUSIC_SECONDS) * RATE)]
        items.append(("music", "fit" if i % 2 == 0 else "held", path.name, audio))
    for i, path in enumerate(sorted(OPENMSX.glob("*.mid"))):
        audio = midi(cache, path)
        audio = audio[int(2 * RATE): int((2 + MUSIC_SECONDS) * RATE)]
        items.append(("music", "fit" if i % 2 == 0 else "held", path.name, audio))
    # Dense, distorted rock and metal: each song's stems (backing, guitar, any rhythm part)
    # mixed as the game plays them, all of it, as the other music has little of this kind.
    for i, song in enumerate(sorted(p.parent for p in FRETSONFIRE.rglob("song.ogg"))):
        stems = [song / f"{stem}.ogg" for stem in ("song", "guitar", "rhythm")
                 if (song / f"{stem}.ogg").is_file()]
        audio = cached(cache, f"fretsonfire:{song}", lambda wav, st=stems: run(
            "ffmpeg", "-v", "error", *[a for f in st for a in ("-i", str(f))], "-filter_complex",
            f"amix=inputs={len(st)}:duration=shortest", "-ac", "1", "-ar", str(RATE),
            str(wav)))
        items.append(("music", "fit" if i % 2 == 0 else "held",
                      f"{song.parent.name}: {song.name}", audio[int(5 * RATE):]))
    for i, seed in enumerate(SYNTHETIC_SEEDS):
        audio = generate_clip(seed, SyntheticConfig(sample_rate=RATE,
                                                    clip_seconds=SYNTHETIC_SECONDS))[0]
        items.append(("music", "fit" if i % 2 == 0 else "held", f"streamtag synthetic {seed}",
                      np.asarray(audio, np.float32)))
    speeds = (140, 170, 200)
    for split, voices, source in (("fit", FIT_VOICES, "GPL-3"), ("held", HELD_VOICES,
                                                                  "Apache-2.0")):
        for v, voice in enumerate(voices):
            for j, chunk in enumerate(texts(source)[:4]):
                speed, pitch = speeds[(v + j) % 3], 35 + 10 * ((v + 2 * j) % 4)
                variant = voice + ("+f3" if (v + j) % 2 else "")
                audio = cached(cache, f"espeak:{variant}:{speed}:{pitch}:{source}:{j}",
                               lambda wav, t=chunk, vv=variant, s=speed, p=pitch: run(
                                   "espeak-ng", "-v", vv, "-s", str(s), "-p", str(p), "-w",
                                   str(wav), t))
                items.append(("speech", split, f"espeak {variant} {source} {j}", audio))
    for j, chunk in enumerate(texts("MPL-2.0")[:4]):
        def festival(wav: Path, t: str = chunk) -> None:
            txt = wav.with_suffix(".txt")
            txt.write_text(t)
            run("text2wave", str(txt), "-o", str(wav))
        items.append(("speech", "held", f"festival MPL-2.0 {j}",
                      cached(cache, f"festival:MPL-2.0:{j}", festival)))
    voices = [load_audio(p, RATE)[0] for p in sorted(ALSA_SOUNDS.glob("*.wav"))
              if p.name != "Noise.wav"]
    items.append(("speech", "held", "alsa-utils voice", joined(voices * 2)))
    for split, packages in (("fit" if fit_speech else "held", FIT_SPEECH),
                            ("held", HELD_SPEECH)):
        for name, audio in recorded_speech(cache, packages):
            items.append(("speech", split, name, audio))
    for name, audio in recorded_voices(cache):
        items.append(("speech", "held", name, audio))
    # The prompts' packages' music on hold (8 kHz recordings too), fitted with them as music:
    # a telephone's band is no sign of speech.
    for path in sorted(MUSIC_ON_HOLD.glob("*.wav")):
        items.append(("music", "fit" if fit_speech else "held",
                      f"asterisk-moh-opsound-wav: {path.stem}",
                      cached(cache, f"moh:{path}", lambda wav, p=path: run(
                          "ffmpeg", "-v", "error", "-i", str(p), "-ac", "1", "-ar", str(RATE),
                          str(wav)))))
    items.append(("noise", "held", "alsa-utils Noise.wav",
                  load_audio(ALSA_SOUNDS / "Noise.wav", RATE)[0]))
    for split, levels in (("fit", (-40, -25, -12)), ("held", (-45, -30, -18, -10))):
        for colour in ("white", "pink", "brown"):
            for level in levels:
                gain = 10 ** (level / 20)
                seconds = "20" if split == "fit" else "17"
                audio = cached(cache, f"noise:{colour}:{seconds}", lambda wav, c=colour,
                               d=seconds: run("sox", "-n", "-r", str(RATE), str(wav), "synth",
                                              d, f"{c}noise"))
                audio = audio / (np.sqrt(np.mean(audio ** 2)) + 1e-12) * gain
                items.append(("noise", split, f"{colour} noise {level} dBFS",
                              audio.astype(np.float32)))
    for split, groups in (("fit" if fit_ambience else "held", FIT_AMBIENCE),
                          ("held", HELD_AMBIENCE)):
        for package, group, audio in ambience(cache, groups):
            items.append(("noise", split, f"{package}: {group}", audio))
    for split, freqs in (("fit", (100, 440, 1000, 3000)), ("held", (60, 250, 1000, 5000))):
        for shape in ("sine", "square", "sawtooth"):
            for f in freqs:
                audio = cached(cache, f"tone:{shape}:{f}", lambda wav, sh=shape, ff=f: run(
                    "sox", "-n", "-r", str(RATE), str(wav), "synth", "12", sh, str(ff),
                    "vol", "0.3"))
                items.append(("tone", split, f"{shape} {f} Hz", audio))
    return items + mixtures(items, after_music=fit_speech)


def source_of(kind: str, name: str) -> str:
    """The source an item's figures are reported under: its package and group, its
    synthesiser, or its kind of signal."""
    if kind in ("noise", "speech") and ": " in name and " + " not in name:
        return name
    if name.startswith("asterisk-moh"):
        return "asterisk-moh-opsound-wav"
    if name.startswith(("espeak", "festival")):
        return name.split()[0] + " (synthesised)"
    if name.startswith("alsa-utils"):
        return name
    if name.startswith("streamtag synthetic"):
        return "streamtag synthetic"
    if kind == "music":
        return "fretsonfire (metal, rock)" if ":" in name else (
            "openttd-openmsx" if name.endswith(".mid") else "singularity-music")
    return f"sox {kind}"


def mix(speech: np.ndarray, bed: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` with ``bed`` under it, ``snr_db`` quieter (RMS over the speech's length)."""
    bed = np.resize(bed, len(speech))
    gain = np.sqrt(np.mean(speech ** 2) / (np.mean(bed ** 2) + 1e-20)) / 10 ** (snr_db / 20)
    return (speech + gain * bed).astype(np.float32)


AFTER_MUSIC = " after music"  # an item's name: speech after PULSE_S of music


def mixtures(items: list, after_music: bool = False) -> list:
    """For the fit: its speech again over its noise (10 to 25 dB under the voice: a phone-in,
    a report from the street) and over its music (15 dB under: a talk show's bed), still
    speech; with ``after_music`` also after PULSE_S of its music (a presenter after a song:
    the song's pulse still in the last 10 s; only the windows wholly in the speech are fitted,
    ``main``). Held-out mixtures are only reported (``main``), never fitted."""
    speech = [(n, a) for k, sp, n, a in items if k == "speech" and sp == "fit"]
    noise = [a for k, sp, n, a in items if k == "noise" and sp == "fit"]
    music = np.concatenate([a for k, sp, n, a in items if k == "music" and sp == "fit"])
    out = []
    for i, (name, audio) in enumerate(speech):
        snr = (25, 15, 10)[i % 3]
        out.append(("speech", "fit", f"{name} + noise {snr} dB",
                    mix(audio, noise[i % len(noise)], snr)))
        start = (i * 977 * RATE) % (len(music) - len(audio))
        out.append(("speech", "fit", f"{name} + music 15 dB",
                    mix(audio, music[start: start + len(audio)], 15)))
        if after_music:
            start = (i * 1931 * RATE) % (len(music) - int(PULSE_S * RATE))
            out.append(("speech", "fit", name + AFTER_MUSIC, np.concatenate(
                [music[start: start + int(PULSE_S * RATE)], audio]).astype(np.float32)))
    return out


def windows(audio: np.ndarray, extended: bool = False) -> np.ndarray:
    """Feature rows of the 3-s windows of ``audio``, one a second: the ten spectral features,
    and with ``extended`` the tonal ones and the pulse after them (``FEATURES``), as the
    tracker computes them (the pulse over the last ``PULSE_S`` up to each window's end, or
    what there is of it)."""
    options = content_options(RATE)
    frontend = OnlineLogMel(options)
    frontend.keep_tonal(extended)
    frontend.accept_waveform(audio)
    frontend.input_finished()
    frames, rows = frontend.pop(), frontend.pop_tonal() if extended else None
    rate = RATE / options.hop_length
    width, hop, pulse = round(WINDOW_S * rate), round(HOP_S * rate), round(PULSE_S * rate)
    out = [window_features(frames[end - width: end], rate)
           if rows is None else
           window_features(frames[end - width: end], rate, rows[end - width: end],
                           frames[max(0, end - pulse): end])
           for end in range(width, len(frames) + 1, hop)]
    return np.array(out).reshape(-1, len(FEATURES if extended else SPECTRAL_FEATURES))


def fit(x: np.ndarray, y: np.ndarray, classes: int, hidden: int = 16, l2: float = 1e-4,
        steps: int = 4000, lr: float = 0.01, seed: int = 0,
        class_weights: tuple[float, ...] | None = None) -> ContentModel:
    """``hidden`` tanh units and a softmax on all ``FEATURES``, each class weighted equally (or
    by ``class_weights``, in ``CLASSES`` order), full-batch Adam."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    counts = np.bincount(y, minlength=classes)
    weight = (len(y) / (classes * counts) * np.asarray(class_weights or [1.0] * classes)
              )[y][:, None] / len(y)
    onehot = np.eye(classes)[y]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((z.shape[1], hidden)) / np.sqrt(z.shape[1]), np.zeros(hidden),
              rng.standard_normal((hidden, classes)) / np.sqrt(hidden), np.zeros(classes)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        w1, b1, w2, b2 = params
        h = np.tanh(z @ w1 + b1)
        logits = h @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * weight
        gh = g @ w2.T * (1 - h ** 2)
        grads = [z.T @ gh + l2 * w1, gh.sum(axis=0), h.T @ g + l2 * w2, g.sum(axis=0)]
        for i, grad in enumerate(grads):
            first[i] = 0.9 * first[i] + 0.1 * grad
            second[i] = 0.999 * second[i] + 0.001 * grad ** 2
            params[i] = params[i] - lr * (first[i] / (1 - 0.9 ** step)) / (
                np.sqrt(second[i] / (1 - 0.999 ** step)) + 1e-8)
    return ContentModel(CLASSES, FEATURES, mean, scale, *params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "streamtag-content-material")
    parser.add_argument("--write", action="store_true",
                        help="store the weights in streamtag/engine/")
    parser.add_argument("--beside-detector", action="store_true",
                        help=f"fit the weights served beside the speech detector "
                             f"({DETECTOR_WEIGHTS_FILE}; else {WEIGHTS_FILE})")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    detector = args.beside_detector
    items = material(args.cache, fit_ambience=True, fit_speech=not detector)
    rows: dict[str, list] = {"fit": [], "held": []}
    for kind, split, name, audio in items:
        feats = windows(audio, True)
        if name.endswith(AFTER_MUSIC):  # the windows wholly in the speech
            feats = feats[int(np.ceil(PULSE_S / HOP_S)):]
        rows[split].append((kind, name, feats))
    x = np.concatenate([f for _, _, f in rows["fit"]])
    y = np.concatenate([[CLASSES.index(k)] * len(f) for k, _, f in rows["fit"]])
    model = fit(x, y, len(CLASSES), hidden=24, l2=1e-3, class_weights=(2.0, 1.0, 2.0, 1.0))
    for split in ("fit", "held"):
        print(f"\n{split}: rows are the truth, columns the classifier's windows")
        print(f"{'':8}" + "".join(f"{c:>8}" for c in CLASSES) + "   correct")
        for kind in CLASSES:
            feats = [f for k, _, f in rows[split] if k == kind]
            if not feats:
                continue
            got = np.argmax(model.probabilities(np.concatenate(feats)), axis=1)
            counts = np.bincount(got, minlength=len(CLASSES))
            print(f"{kind:8}" + "".join(f"{c:8d}" for c in counts)
                  + f"   {counts[CLASSES.index(kind)] / counts.sum():7.1%}")
    shipped = ContentModel.load(beside_detector=detector)
    print("\nheld out, per source: share of windows per class, the shipped weights' and these "
          "(music / speech / noise / tone; 'no speech': the network's speech left out, as "
          "where silero-vad decides speech)")
    sources: dict[tuple[str, str], list] = {}
    for kind, name, feats in rows["held"]:
        sources.setdefault((kind, source_of(kind, name)), []).append(feats)
    print("| truth | source | windows | shipped | shipped, no speech | fitted "
          "| fitted, no speech |")
    print("|---|---|---|---|---|---|---|")
    for (kind, source), feats in sources.items():
        f = np.concatenate(feats)
        if not len(f):
            continue
        cells = []
        for m in (shipped, model):
            for speech in (True, False):
                probs = m.probabilities(f[:, :len(m.features)])  # the features each reads
                if not speech:
                    probs[:, CLASSES.index("speech")] = -1.0
                got = np.bincount(np.argmax(probs, axis=1), minlength=len(CLASSES)) / len(f)
                cells.append(" / ".join(f"{100 * v:.0f}" for v in got))
        print(f"| {kind} | {source} | {len(f)} | " + " | ".join(cells) + " |")
    print("\nheld out, per piece (share of windows right):")
    for kind, name, feats in rows["held"]:
        got = np.argmax(model.probabilities(feats), axis=1)
        right = float(np.mean(got == CLASSES.index(kind))) if len(got) else float("nan")
        if right < 0.95:
            print(f"  {kind:7} {name:40} {right:6.1%} of {len(got)}")
    print("\nnot fitted, not a class: held-out speech mixed with held-out music or pink noise "
          "(speech level over the other's, RMS), share of windows per class:")
    speech = np.concatenate([a for k, sp, n, a in items if k == "speech" and sp == "held"
                             and n.startswith("festival")])
    music = np.concatenate([a for k, sp, n, a in items if k == "music" and sp == "held"])
    noise = [a for k, sp, n, a in items if n == "pink noise -18 dBFS"][0]
    for name, bed in (("music", music), ("pink noise", noise)):
        for snr in (20, 10, 0, -10):
            got = np.argmax(model.probabilities(windows(mix(speech, bed, snr), True)),
                            axis=1)
            counts = np.bincount(got, minlength=len(CLASSES)) / len(got)
            print(f"  speech {snr:+d} dB over {name:10}: " + ", ".join(
                f"{c} {v:.0%}" for c, v in zip(CLASSES, counts, strict=True)))
    if args.write:
        out = Path(__file__).resolve().parent.parent / "streamtag" / "engine" / (
            DETECTOR_WEIGHTS_FILE if detector else WEIGHTS_FILE)
        out.write_text(model.to_json())
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
