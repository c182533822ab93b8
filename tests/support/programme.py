"""A radio programme of real recordings from Debian packages, and what plays it: orchestral game
music (wesnoth-1.16-music), solo piano (Greensleeves, a traditional tune, written here as MIDI
and rendered with FluidR3 GM), rock and death metal (fretsonfire's songs), electronic
(singularity-music), asc-music and planetblupi's music, a news bulletin read by espeak-ng,
digital silence, noise at -60 dBFS and a stuck 1 kHz tone. ``Playout`` sends it in real time
to an Icecast MP3 mount (ffmpeg, each title announced as it starts, as a playout system does)
and to a chained Ogg mount (one Vorbis link per item, titled by its comments)."""

from __future__ import annotations

import base64
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamtag.audio.files import load_audio, write_audio

RATE = 44100
WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/music")
FRETSONFIRE = Path("/usr/share/games/fretsonfire/data/songs")
SINGULARITY = Path("/usr/share/games/singularity/music")
ASC = Path("/usr/share/games/asc/music")
BLUPI = Path("/usr/share/planetblupi/music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PACKAGES = ("wesnoth-1.16-music fretsonfire-songs-muldjord fretsonfire-songs-sectoid "
            "singularity-music asc-music planetblupi-music-ogg fluidsynth fluid-soundfont-gm "
            "espeak-ng ffmpeg icecast2")
MISSING = f"needs Debian's {PACKAGES}: apt-get install {PACKAGES}"
SHORT_PACKAGES = "singularity-music espeak-ng ffmpeg icecast2"
SHORT_MISSING = f"needs Debian's {SHORT_PACKAGES}: apt-get install {SHORT_PACKAGES}"

BULLETIN = (
    "Good evening. Here is the news at six. The regional council has approved the new budget "
    "for public transport, with two more bus lines from the spring. Farmers in the north say "
    "the dry summer has cut the harvest by a fifth, and prices of bread are expected to rise. "
    "In sport, the city club won its home game by two goals to one, its third win in a row. "
    "The weather: rain in the west tonight, clearing by morning, with highs of fourteen "
    "degrees. That was the news.")

# Greensleeves (traditional): the tune as (MIDI note, beats), three beats a bar, after a
# one-beat pick-up; the left hand's chord per bar as (root, third, fifth).
_VERSE = [(72, 2), (74, 1), (76, 1.5), (77, .5), (76, 1), (74, 2), (71, 1), (67, 1.5), (69, .5),
          (71, 1), (72, 2), (69, 1), (69, 1.5), (68, .5), (69, 1), (71, 2), (68, 1), (64, 2),
          (69, 1)]
_VERSE_END = [(72, 1.5), (71, .5), (69, 1), (68, 1.5), (66, .5), (68, 1), (69, 3), (69, 3)]
_CHORUS = [(79, 3), (79, 1.5), (78, .5), (76, 1), (74, 2), (71, 1), (67, 1.5), (69, .5),
           (71, 1), (72, 2), (69, 1), (69, 1.5), (68, .5), (69, 1), (71, 2), (68, 1), (64, 3)]
_CHORUS_END = [(79, 3), (79, 1.5), (78, .5), (76, 1), (74, 2), (71, 1), (67, 1.5), (69, .5),
               (71, 1)] + _VERSE_END
GREENSLEEVES = [(69, 1)] + _VERSE + _VERSE[:10] + _VERSE_END + _CHORUS + _CHORUS_END
_AM, _C, _G, _EM, _F, _E = (45, 48, 52), (48, 52, 55), (43, 47, 50), (40, 43, 47), \
    (41, 45, 48), (40, 44, 47)
CHORDS = ([_AM, _C, _G, _EM, _AM, _F, _E, _E, _AM, _C, _G, _EM, _AM, _E, _AM, _AM]
          + [_C, _C, _G, _EM, _AM, _F, _E, _E, _C, _C, _G, _EM, _AM, _E, _AM, _AM])


def varlen(n: int) -> bytes:
    """``n`` as a standard MIDI file's variable-length number (a delta time)."""
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_file(track: bytes, ticks: int) -> bytes:
    """A standard MIDI file of one track (its events, ending in end-of-track), ``ticks`` a
    beat."""
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks)
            + b"MTrk" + struct.pack(">I", len(track)) + track)


def piano_midi(path: Path, beat_s: float = 0.42) -> Path:
    """Greensleeves for solo piano (General MIDI program 0) as a standard MIDI file: the tune
    and an arpeggiated left hand."""
    ticks = 480
    notes = []  # (start beat, beats, note, velocity)
    at = 0.0
    for note, beats in GREENSLEEVES:
        notes.append((at, beats, note, 84))
        at += beats
    for bar, chord in enumerate(CHORDS):
        for beat, note in enumerate((chord[0], chord[2], chord[1] + 12)):
            notes.append((1 + 3 * bar + beat, 1, note, 58))
    events = sorted([(round(s * ticks), 0x90, n, v) for s, _, n, v in notes]
                    + [(round((s + b) * ticks) - 10, 0x80, n, 0) for s, b, n, _ in notes],
                    key=lambda e: (e[0], e[1] == 0x90))
    track = bytearray(b"\x00\xff\x51\x03" + round(beat_s * 1e6).to_bytes(3, "big")
                      + b"\x00\xc0\x00")
    last = 0
    for tick, status, note, velocity in events:
        track += varlen(tick - last) + bytes((status, note, velocity))
        last = tick
    track += b"\x00\xff\x2f\x00"
    path.write_bytes(midi_file(bytes(track), ticks))
    return path


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=300)


@dataclass(frozen=True)
class Item:
    """One item of the programme: its title, what it is (music, speech, silence, noise,
    tone), where it came from and its samples (mono, RATE)."""

    title: str
    kind: str
    source: str
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def require(short: bool = False) -> None:
    """Skips, naming what to install, unless the programme's tools and packages are here;
    ``short``: only those of ``short_programme``."""
    tools = ("espeak-ng", "ffmpeg", "icecast2") if short else (
        "espeak-ng", "fluidsynth", "ffmpeg", "icecast2")
    paths = (SINGULARITY,) if short else (
        WESNOTH, FRETSONFIRE / "muldjord", FRETSONFIRE / "sectoid", SINGULARITY, ASC, BLUPI,
        SOUNDFONT)
    if any(shutil.which(t) is None for t in tools) or not all(p.exists() for p in paths):
        pytest.skip(SHORT_MISSING if short else MISSING)


def excerpt(path: Path, seconds: float, start_s: float) -> np.ndarray:
    audio, _ = load_audio(path, RATE)
    return audio[round(start_s * RATE): round((start_s + seconds) * RATE)].astype(np.float32)


def song(folder: Path, seconds: float, start_s: float) -> np.ndarray:
    """A fretsonfire song as heard: its backing track and its guitar track together."""
    parts = [excerpt(folder / f"{part}.ogg", seconds, start_s) for part in ("song", "guitar")]
    n = min(len(p) for p in parts)
    return (parts[0][:n] + parts[1][:n]).astype(np.float32)


def bulletin(folder: Path, seconds: float | None = None) -> np.ndarray:
    """The news read by espeak-ng in a voice the content classifier was not fitted on."""
    out = folder / "bulletin.wav"
    run("espeak-ng", "-v", "en-gb-scotland", "-s", "160", "-w", str(out), BULLETIN)
    audio = load_audio(out, RATE)[0]
    audio = audio / np.abs(audio).max() * 0.5
    return (audio if seconds is None else audio[: round(seconds * RATE)]).astype(np.float32)


def piano(folder: Path, seconds: float) -> np.ndarray:
    out = folder / "greensleeves.wav"
    run("fluidsynth", "-ni", "-g", "0.8", "-r", str(RATE), "-F", str(out), str(SOUNDFONT),
        str(piano_midi(folder / "greensleeves.mid")))
    return load_audio(out, RATE)[0][: round(seconds * RATE)].astype(np.float32)


def noise(seconds: float, level_dbfs: float) -> np.ndarray:
    x = np.random.default_rng(60).standard_normal(round(seconds * RATE))
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (level_dbfs / 20)).astype(np.float32)


def tone(seconds: float, hz: float = 1000.0, level_dbfs: float = -12.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sqrt(2) * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def short_programme(folder: Path) -> list[Item]:
    """Music, speech, digital silence and music again: 18 s."""
    return [
        Item("Opening theme", "music", "singularity-music A New Journey.ogg",
             excerpt(SINGULARITY / "A New Journey.ogg", 4.0, 20.0)),
        Item("News bulletin", "speech", "espeak-ng en-gb-scotland", bulletin(folder, 6.0)),
        Item("Dead air", "silence", "digital silence", np.zeros(6 * RATE, np.float32)),
        Item("Closing theme", "music", "singularity-music Aberrations.ogg",
             excerpt(SINGULARITY / "Aberrations.ogg", 2.0, 20.0)),
    ]


def whole_programme(folder: Path) -> list[Item]:
    """The issue's table as a programme, about 7 minutes."""
    return [
        Item("Battle theme", "music", "wesnoth-1.16-music battle-epic.ogg",
             excerpt(WESNOTH / "battle-epic.ogg", 40.0, 20.0)),
        Item("News bulletin", "speech", "espeak-ng en-gb-scotland", bulletin(folder)),
        Item("Greensleeves", "music", "FluidR3 GM piano (fluid-soundfont-gm)",
             piano(folder, 40.0)),
        Item("Dead air", "silence", "digital silence", np.zeros(20 * RATE, np.float32)),
        Item("Legends of the north", "music", "wesnoth-1.16-music legends_of_the_north.ogg",
             excerpt(WESNOTH / "legends_of_the_north.ogg", 40.0, 20.0)),
        Item("Quiet noise", "noise", "white noise at -60 dBFS", noise(20.0, -60.0)),
        Item("Chaos god", "music", "fretsonfire-songs-muldjord chaos_god",
             song(FRETSONFIRE / "muldjord" / "chaos_god", 30.0, 30.0)),
        Item("Stuck tone", "tone", "1 kHz sine at -12 dBFS", tone(20.0)),
        Item("War of freedom", "music", "fretsonfire-songs-sectoid War of freedom",
             song(FRETSONFIRE / "sectoid" / "War of freedom", 30.0, 20.0)),
        Item("A new journey", "music", "singularity-music A New Journey.ogg",
             excerpt(SINGULARITY / "A New Journey.ogg", 30.0, 20.0)),
        Item("Frontiers", "music", "asc-music frontiers.mp3",
             excerpt(ASC / "frontiers.mp3", 60.0, 20.0)),
        Item("Blupi", "music", "planetblupi-music-ogg music002.ogg",
             excerpt(BLUPI / "music002.ogg", 30.0, 10.0)),
    ]


def ogg_pages(data: bytes, rate: int) -> list[tuple[int, float]]:
    """(the byte where each page ends, the audio second its page ends at) of an Ogg link; the
    header pages end at second 0."""
    marks, at = [], 0
    while at < len(data):
        if data[at: at + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {at}")
        granule = struct.unpack("<q", data[at + 6: at + 14])[0]
        segments = data[at + 27: at + 27 + data[at + 26]]
        at += 27 + len(segments) + sum(segments)
        marks.append((at, max(granule, 0) / rate))
    return marks


def encode(folder: Path, items: list[Item], kind: str) -> list[Piece]:
    """The items as one MP3 stream at 128 kb/s (one piece, paced by its constant bitrate), or
    as Vorbis links titled by their TITLE comments (a piece per item, for a chained Ogg stream,
    each page sent as its audio is due)."""
    def ffmpeg(audio: np.ndarray, out: Path, *codec: str) -> bytes:
        wav = out.with_suffix(".wav")
        write_audio(wav, audio, RATE)
        run("ffmpeg", "-nostdin", "-y", "-i", str(wav), "-ac", "2", *codec, str(out))
        return out.read_bytes()

    if kind == "mp3":
        audio = np.concatenate([i.audio for i in items])
        data = ffmpeg(audio, folder / "programme.mp3", "-c:a", "libmp3lame", "-b:a", "128k",
                      "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3")
        seconds = len(audio) / RATE
        step = 1600  # a tenth of a second at 128 kb/s
        return [Piece(data, seconds, [(min(end, len(data)), min(end, len(data)) / len(data)
                                       * seconds)
                                      for end in range(step, len(data) + step, step)])]
    pieces = []
    for n, item in enumerate(items):
        data = ffmpeg(item.audio, folder / f"link{n}.ogg", "-c:a", "libvorbis", "-q:a", "4",
                      "-metadata", f"TITLE={item.title}", "-f", "ogg")
        pieces.append(Piece(data, item.seconds, ogg_pages(data, RATE)))
    return pieces


@dataclass(frozen=True)
class Piece:
    """Bytes a source client sends, ``seconds`` of audio, in parts: (the byte a part ends at,
    the programme second it is due at, from the piece's start)."""

    data: bytes
    seconds: float
    parts: list[tuple[int, float]]


class SourceClient:
    """A source client sending ``pieces`` to an Icecast mount in real time
    over HTTP PUT, a second ahead as an encoder's buffer is. For an MP3 mount it announces
    each title in ``titles`` (programme second, title) as its audio goes out, as a playout
    system does. ``stop_at`` (programme second, seconds): the encoder stops there and comes
    back that much later with the rest, announcing the title again. The first
    ``START_BYTES`` go at once (the mount goes live); the rest once ``release`` is called."""

    START_BYTES = 8192
    AHEAD_S = 1.0

    def __init__(self, icecast, mount: str, content_type: str,
                 pieces: list[Piece], titles: list[tuple[float, str]] = (),
                 stop_at: tuple[float, float] | None = None) -> None:
        self.icecast, self.mount, self.content_type = icecast, mount, content_type
        self.pieces, self.titles, self.stop_at = pieces, list(titles), stop_at
        self.announced: list[tuple[str, float]] = []
        self.stopped_at: float | None = None
        self.back_at: float | None = None
        self.error: BaseException | None = None
        self.go, self.quit = threading.Event(), threading.Event()
        self.sock = self._connect()
        self.sock.sendall(pieces[0].data[: self.START_BYTES])
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _connect(self) -> socket.socket:
        port = self.icecast.port
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        auth = base64.b64encode(f"source:{self.icecast.password}".encode()).decode()
        sock.sendall((f"PUT {self.mount} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Basic {auth}\r\nContent-Type: {self.content_type}\r\n"
                      f"Ice-Public: 0\r\n\r\n").encode())
        answer = sock.recv(1024)
        assert b" 200 " in answer.split(b"\r\n")[0], answer
        return sock

    def _announce(self, title: str) -> None:
        self.icecast.admin("metadata", mount=self.mount, mode="updinfo", song=title)
        self.announced.append((title, time.time()))

    def release(self) -> None:
        self.go.set()

    def _send(self) -> None:
        try:
            if not self.go.wait(60):
                raise TimeoutError("the test never released the source client")
            start, done, sent = time.monotonic(), 0.0, self.START_BYTES
            for piece in self.pieces:
                for end, due_s in piece.parts:
                    if self.quit.is_set():
                        return
                    at = done + due_s  # the programme second this part ends at
                    while self.titles and self.titles[0][0] <= at:
                        self._announce(self.titles.pop(0)[1])
                    if self.stop_at is not None and at >= self.stop_at[0]:
                        start += self._stop_and_come_back(self.stop_at[1])
                        self.stop_at = None
                    if end > sent:
                        self.sock.sendall(piece.data[sent: end])
                        sent = end
                    time.sleep(max(0.0, start + at - self.AHEAD_S - time.monotonic()))
                done += piece.seconds
                sent = 0
        except BaseException as exc:  # noqa: BLE001 - said by join()
            self.error = exc
        finally:
            self.sock.close()  # the mount ends with its source

    def _stop_and_come_back(self, seconds: float) -> float:
        self.sock.close()
        self.stopped_at = time.time()
        self.quit.wait(seconds)
        self.sock = self._connect()
        self.back_at = time.time()
        if self.announced:
            self._announce(self.announced[-1][0])
        return seconds

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.quit.set()
        self.go.set()
        self.thread.join(10)
