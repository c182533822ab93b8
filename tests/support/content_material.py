"""Speech, music, noise and tones from Debian packages, none of them in the content
classifier's fit (benchmarks/content_fit.py takes the other pieces, voices and texts): a
second synthesiser (festival), an espeak-ng voice and text the fit never heard, a real
person (alsa-utils' channel names), held-out game music and MIDI rendered with FluidR3, and
recorded ambience from packages content_fit.py holds out (its ``HELD_AMBIENCE``): a sports
crowd, applause, farm animals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamtag.audio.files import load_audio

RATE = 16000
SINGULARITY = Path("/usr/share/games/singularity/music")
OPENMSX = Path("/usr/share/games/openttd/baseset/openmsx")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
LICENSES = Path("/usr/share/common-licenses")
FRETSONFIRE = Path("/usr/share/games/fretsonfire/data/songs")
PACKAGES = ("singularity-music openttd-openmsx fluidsynth fluid-soundfont-gm espeak-ng festival "
            "festvox-kallpc16k alsa-utils sox fretsonfire-songs-muldjord "
            "fretsonfire-songs-sectoid")
MISSING = f"needs Debian's {PACKAGES}: apt-get install {PACKAGES}"
LINCITY = Path("/usr/share/games/lincity-ng/sounds")
FOOBILLARD = Path("/usr/share/games/foobillardplus/data")
TUXPAINT = Path("/usr/share/tuxpaint/stamps/animals")
AMBIENCE_PACKAGES = "lincity-ng-data foobillardplus-data tuxpaint-stamps-default"
FARM_ANIMALS = ("mammals/bovines/cow.ogg", "mammals/bovines/sheep.ogg", "mammals/pig.ogg",
                "mammals/bovines/goat.ogg", "mammals/equines/horse.ogg",
                "mammals/equines/donkey.ogg", "birds/hen.ogg", "birds/rooster.ogg",
                "birds/duck.ogg", "birds/turkey.ogg", "mammals/dogs/dog.ogg")


def require() -> None:
    tools = ("espeak-ng", "text2wave", "fluidsynth", "sox")
    paths = (SINGULARITY, OPENMSX, SOUNDFONT, ALSA_SOUNDS / "Front_Center.wav",
             FRETSONFIRE / "muldjord", FRETSONFIRE / "sectoid")
    if any(shutil.which(t) is None for t in tools) or not all(p.exists() for p in paths):
        pytest.skip(MISSING)


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)


def _text(name: str, start: int, length: int) -> str:
    return " ".join((LICENSES / name).read_text().split())[start: start + length]


def festival_speech(folder: Path) -> np.ndarray:
    text = folder / "mpl.txt"
    text.write_text(_text("MPL-2.0", 0, 700))
    run("text2wave", str(text), "-o", str(folder / "festival.wav"))
    return load_audio(folder / "festival.wav", RATE)[0]


# A tune of streamtag's own for festival's singing mode (``text2wave -mode singing``): each word
# held on its note for a beat and a half at 80 beats a minute, about 14 s
SONG = (("C4", "morning"), ("D4", "light"), ("E4", "across"), ("F4", "the"), ("G4", "water"),
        ("A4", "slowly"), ("G4", "rising"), ("F4", "over"), ("E4", "hills"), ("D4", "and"),
        ("C4", "fields"), ("E4", "we"), ("G4", "sing"), ("E4", "along"), ("C4", "home"))


def festival_song(folder: Path, sing: bool = True) -> np.ndarray:
    """festival's voice singing ``SONG`` a cappella, or (``sing`` False) saying its words."""
    if sing:
        notes = "\n".join(f'<DURATION BEATS="1.5"><PITCH NOTE="{note}">{word}</PITCH>'
                          "</DURATION>" for note, word in SONG)
        source = folder / "song.xml"
        source.write_text('<?xml version="1.0"?>\n<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD '
                          'SINGING mark up//EN" "Singing.v0_1.dtd" []>\n<SINGING BPM="80">\n'
                          f"{notes}\n</SINGING>\n")
        run("text2wave", "-mode", "singing", str(source), "-o", str(folder / "song.wav"))
    else:
        source = folder / "song.txt"
        source.write_text(" ".join(word for _, word in SONG) + ".")
        run("text2wave", str(source), "-o", str(folder / "song.wav"))
    return load_audio(folder / "song.wav", RATE)[0]


def espeak_speech(folder: Path, voice: str = "fr", start: int = 0) -> np.ndarray:
    """espeak-ng in a voice the fit did not use (fr, it, en-gb-scotland), Apache-2.0's text."""
    out = folder / f"espeak-{voice}-{start}.wav"
    run("espeak-ng", "-v", voice, "-s", "165", "-w", str(out), _text("Apache-2.0", start, 500))
    return load_audio(out, RATE)[0]


def real_voice() -> np.ndarray:
    """A person saying the channel names, twice, with short gaps (about 20 s)."""
    clips = [load_audio(p, RATE)[0] for p in sorted(ALSA_SOUNDS.glob("*.wav"))
             if p.name != "Noise.wav"]
    gap = np.zeros(int(0.3 * RATE), np.float32)
    return np.concatenate([np.concatenate([c, gap]) for c in clips * 2])


def held_out_pieces() -> list[Path]:
    """The singularity-music pieces the fit did not take (every other one)."""
    return sorted(SINGULARITY.rglob("*.ogg"))[1::2]


def game_music(index: int, seconds: float, start_s: float = 5.0) -> np.ndarray:
    audio, _ = load_audio(held_out_pieces()[index], RATE)
    return audio[round(start_s * RATE): round((start_s + seconds) * RATE)]


def held_out_song(name: str, seconds: float, start_s: float) -> np.ndarray:
    """A fretsonfire song the fit did not take (every other one), its backing and guitar
    tracks together as the game plays them."""
    song = next(p for p in sorted(q.parent for q in FRETSONFIRE.rglob("song.ogg"))[1::2]
                if p.name == name)
    parts = [load_audio(song / f"{part}.ogg", RATE)[0][round(start_s * RATE):
                                                       round((start_s + seconds) * RATE)]
             for part in ("song", "guitar")]
    n = min(len(p) for p in parts)
    return (parts[0][:n] + parts[1][:n]) / 2


def midi_music(folder: Path, index: int, seconds: float) -> np.ndarray:
    """A held-out openttd-openmsx MIDI file rendered with FluidR3 GM."""
    path = sorted(OPENMSX.glob("*.mid"))[1::2][index]
    out = folder / f"{path.stem}.wav"
    run("fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(out), str(SOUNDFONT),
        str(path))
    return load_audio(out, RATE)[0][2 * RATE: round((2 + seconds) * RATE)]


def sox_signal(folder: Path, name: str, *synth: str, level_dbfs: float | None = None
               ) -> np.ndarray:
    out = folder / f"{name}.wav"
    run("sox", "-n", "-r", str(RATE), str(out), "synth", *synth)
    audio = load_audio(out, RATE)[0]
    if level_dbfs is not None:
        audio = audio / np.sqrt(np.mean(audio ** 2)) * 10 ** (level_dbfs / 20)
    return audio.astype(np.float32)


def require_ambience() -> None:
    paths = (LINCITY / "SportsCroud1.wav", FOOBILLARD / "applause.wav", TUXPAINT / FARM_ANIMALS[0])
    if not all(p.exists() for p in paths):
        pytest.skip(f"needs Debian's {AMBIENCE_PACKAGES}: apt-get install {AMBIENCE_PACKAGES}")


def stitched(paths: list[Path], seconds: float = 15.0) -> np.ndarray:
    """Sound effects one after the other, each faded in and out over 20 ms, played again
    until ``seconds`` long (the clips are seconds long, windows 3 s)."""
    fade = np.linspace(0.0, 1.0, int(0.02 * RATE), dtype=np.float32)
    clips = []
    for path in paths:
        clip = np.array(load_audio(path, RATE)[0], np.float32)
        clip[:len(fade)] *= fade
        clip[-len(fade):] *= fade[::-1]
        clips.append(clip)
    audio = np.concatenate(clips)
    return np.tile(audio, int(np.ceil(seconds * RATE / len(audio))))


def sports_crowd() -> np.ndarray:
    """lincity-ng-data's sports ground: a crowd cheering (GPL-2+)."""
    return stitched(sorted(LINCITY.glob("SportsCroud*.wav")))


def applause() -> np.ndarray:
    """foobillardplus-data's applause (GPL-2)."""
    return stitched([FOOBILLARD / "applause.wav"])


def farm_animals() -> np.ndarray:
    """tuxpaint-stamps-default's farm animals and a dog, each calling once (GPL-2)."""
    return stitched([TUXPAINT / name for name in FARM_ANIMALS], 40.0)
