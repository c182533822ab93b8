"""Synthetic music: seeded, music-like clips whose tags are acoustic facts.

The generator behind the synthetic benchmark (``streamtag.train.synthetic`` writes its data sets),
the demo piece and the default thresholds' calibration music.

A clip has a melody, chords and a bass line in one key and mode, optionally a drum kit, played
with one articulation and one brightness, at one tempo and level. The parameters are drawn from
the seed (``overrides`` can fix any of them); the tags follow from the parameters and from
measurements of the rendered clip by the rules below, so that a listener — and a measurement —
agrees with every tag. Same seed and config: bitwise the same audio (on one machine; numpy's FFT
and transcendental functions may round differently elsewhere).

Tag rules (the constants below hold the numbers):

========== ==================================================================================
fast       tempo >= 130 BPM and a part that strikes on every beat (the drums, or bass or chords
           in quarter notes): the fast pulse is sounded, not only implied
slow       tempo <= 90 BPM; between 90 and 130, neither
major      scale, chords and melody are natural major / natural minor, chords diatonic triads,
minor      so the third above the key's root is only ever major (4 semitones) or only ever minor
           (3 semitones); every clip is one or the other; every progression starts on the tonic
loud       RMS of the whole finished clip >= -20 dBFS
soft       RMS of the whole finished clip <= -30 dBFS
bright     brightness b >= 0.65; b sets both the harmonic rolloff of every pitched instrument
dark       (amplitudes times h^(-2(1 - b)) on top of the timbre's own) and a 12 dB/octave low-pass
           of the whole mix at 500 * 2^(6b) Hz (500 Hz at b = 0, 1.07 kHz at 0.35, 7.5 kHz at
           0.65); dark: b <= 0.35
percussive a drum kit (kick, snare, hi-hat) plays; without the tag there is no drum at all.
           The brightness low-pass muffles the drums too: a dark mix is dark throughout
sustained  pitched notes rise over 40-100 ms and hold their level until released
plucked    pitched notes start within 3 ms and decay exponentially with a time constant of
           80-220 ms; a third articulation, "struck" (time constant 0.6-1.2 s), gets neither tag
dense      >= 8 pitched note onsets per second and a mean polyphony >= 3.5
sparse     <= 2.5 pitched note onsets per second and a mean polyphony <= 1.5
========== ==================================================================================

Onsets count every pitched note, chord tones each; drums are not counted (they have their own
tag). Polyphony is the summed audible length of the pitched notes divided by the clip length,
where a decaying note is audible for its gate or three decay time constants, whichever is shorter.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamtag import values
from streamtag.errors import ConfigError

__all__ = [
    "TAGS",
    "SyntheticConfig",
    "demo_piece",
    "generate_clip",
]

TAGS: tuple[str, ...] = ("fast", "slow", "major", "minor", "loud", "soft", "bright", "dark",
                         "percussive", "sustained", "plucked", "dense", "sparse")
RULES_VERSION = 1

FAST_MIN_BPM = 130.0
SLOW_MAX_BPM = 90.0
LOUD_MIN_DBFS = -20.0
SOFT_MAX_DBFS = -30.0
BRIGHT_MIN = 0.65
DARK_MAX = 0.35
DENSE_MIN_ONSETS_HZ = 8.0
DENSE_MIN_POLYPHONY = 3.5
SPARSE_MAX_ONSETS_HZ = 2.5
SPARSE_MAX_POLYPHONY = 1.5

MODES = ("major", "minor")
ARTICULATIONS = ("sustained", "plucked", "struck")
TIMBRES = ("saw", "square", "reed", "organ", "flute")

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0 = tonic), one chord a bar, looped; all start on the tonic.
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),  # I V vi IV, I IV V I, ...
    "minor": ((0, 5, 3, 4), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 0, 4)),  # i VI iv v, i iv v i, ...
}
_MELODY_MOVES = (-2, -1, -1, 0, 1, 1, 2)
_TABLE_BITS = 13
_TABLE_SIZE = 1 << _TABLE_BITS  # nearest-sample lookup: the phase error sits ~55 dB down
_NOISE_SAMPLES = 1 << 20
_PART_GAIN = {"melody": 0.5, "chords": 0.3, "bass": 0.45}

# Parameters drawn per clip; each may be fixed through ``overrides``.
PARAMETERS = ("tempo_bpm", "mode", "root_midi", "level_dbfs", "brightness", "drums",
              "articulation", "envelope", "density", "melody_timbre", "chord_timbre",
              "bass_timbre", "progression", "drum_gain_db")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What the generator may draw. ``tags`` restricts the tags reported (a subset of ``TAGS``)."""

    sample_rate: int = 16000
    clip_seconds: float = 8.0
    tags: tuple[str, ...] = TAGS
    tempo_range_bpm: tuple[float, float] = (60.0, 170.0)
    level_range_dbfs: tuple[float, float] = (-40.0, -12.0)
    drum_probability: float = 0.5
    noise_floor_dbfs: float = -70.0

    def __post_init__(self) -> None:
        values.set_field(self, "tags", tuple(self.tags))
        values.set_field(self, "tempo_range_bpm", tuple(self.tempo_range_bpm))
        values.set_field(self, "level_range_dbfs", tuple(self.level_range_dbfs))
        for name in ("clip_seconds", "drum_probability", "noise_floor_dbfs",
                     "tempo_range_bpm", "level_range_dbfs"):
            value = getattr(self, name)
            pair = isinstance(value, tuple)
            if (pair and len(value) != 2) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in (value if pair else (value,))):
                raise ConfigError(f"synthetic.{name} must be "
                                  + ("two numbers, [low, high]" if pair else "a number")
                                  + f", got {value!r}")
        unknown = [t for t in self.tags if t not in TAGS]
        if unknown or not self.tags:
            raise ConfigError(f"synthetic.tags must be a non-empty subset of {list(TAGS)}; "
                              f"unknown: {unknown}")
        if not (isinstance(self.sample_rate, int) and 8000 <= self.sample_rate <= 192000):
            raise ConfigError(f"synthetic.sample_rate must be an integer in [8000, 192000], "
                              f"got {self.sample_rate!r}")
        if not 0.5 <= self.clip_seconds <= 600:
            raise ConfigError(f"synthetic.clip_seconds must be in [0.5, 600], "
                              f"got {self.clip_seconds!r}")
        lo, hi = self.tempo_range_bpm
        if not 30 <= lo <= hi <= 300:
            raise ConfigError(f"synthetic.tempo_range_bpm must satisfy 30 <= low <= high <= 300, "
                              f"got {self.tempo_range_bpm!r}")
        lo, hi = self.level_range_dbfs
        if not -80 <= lo <= hi <= -3:
            raise ConfigError(f"synthetic.level_range_dbfs must satisfy -80 <= low <= high <= -3, "
                              f"got {self.level_range_dbfs!r}")
        if not 0 <= self.drum_probability <= 1:
            raise ConfigError(f"synthetic.drum_probability must be in [0, 1], "
                              f"got {self.drum_probability!r}")
        if not -140 <= self.noise_floor_dbfs <= -40:
            raise ConfigError(f"synthetic.noise_floor_dbfs must be in [-140, -40], "
                              f"got {self.noise_floor_dbfs!r}")

    def replace(self, **changes: Any) -> SyntheticConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyntheticConfig:
        """Inverse of ``to_dict`` (a TOML table works too); an unknown key is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown synthetic option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Parameters


def _draw_parameters(seed: int, config: SyntheticConfig) -> dict[str, Any]:
    # Own stream, fixed order: overriding one parameter never changes the others.
    rng = np.random.default_rng([seed, 0])
    return {
        "tempo_bpm": float(rng.uniform(*config.tempo_range_bpm)),
        "mode": MODES[int(rng.integers(2))],
        "root_midi": int(rng.integers(45, 57)),  # A2 .. G#3, the chords' register
        "level_dbfs": float(rng.uniform(*config.level_range_dbfs)),
        "brightness": float(rng.uniform(0.0, 1.0)),
        "drums": bool(rng.random() < config.drum_probability),
        "articulation": ARTICULATIONS[int(rng.choice(3, p=[0.4, 0.4, 0.2]))],
        "envelope": float(rng.uniform(0.0, 1.0)),  # where in the articulation's range
        "density": float(rng.uniform(0.0, 1.0)),
        "melody_timbre": TIMBRES[int(rng.integers(len(TIMBRES)))],
        "chord_timbre": TIMBRES[int(rng.integers(len(TIMBRES)))],
        "bass_timbre": TIMBRES[int(rng.integers(len(TIMBRES)))],
        "progression": int(rng.integers(4)),
        "drum_gain_db": float(rng.uniform(-6.0, 0.0)),
    }


def _check_overrides(overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown synthetic parameter(s) {unknown}; known: {list(PARAMETERS)}")
    choices = {"mode": MODES, "articulation": ARTICULATIONS, "melody_timbre": TIMBRES,
               "chord_timbre": TIMBRES, "bass_timbre": TIMBRES, "progression": range(4)}
    for name, allowed in choices.items():
        if name in overrides and overrides[name] not in allowed:
            raise ConfigError(f"synthetic parameter {name} must be one of {list(allowed)}, "
                              f"got {overrides[name]!r}")
    for name in ("brightness", "density", "envelope"):
        if name in overrides and not 0.0 <= overrides[name] <= 1.0:
            raise ConfigError(f"synthetic parameter {name} must be in [0, 1], "
                              f"got {overrides[name]!r}")
    if "tempo_bpm" in overrides and not 30 <= overrides["tempo_bpm"] <= 300:
        raise ConfigError(f"synthetic parameter tempo_bpm must be in [30, 300], "
                          f"got {overrides['tempo_bpm']!r}")
    if "level_dbfs" in overrides and not -80 <= overrides["level_dbfs"] <= -3:
        raise ConfigError(f"synthetic parameter level_dbfs must be in [-80, -3], "
                          f"got {overrides['level_dbfs']!r}")
    if "root_midi" in overrides and not 36 <= overrides["root_midi"] <= 72:
        raise ConfigError(f"synthetic parameter root_midi must be in [36, 72], "
                          f"got {overrides['root_midi']!r}")


def _envelope_times(articulation: str, u: float) -> tuple[float, float | None]:
    """(attack_s, decay time constant in s or None for no decay)."""
    if articulation == "sustained":
        return 0.04 + 0.06 * u, None
    if articulation == "plucked":
        return 0.003, 0.08 + 0.14 * u
    return 0.005, 0.6 + 0.6 * u  # struck


# --------------------------------------------------------------------------------------------
# Composition: note events in seconds


def _degree_semitones(scale: Sequence[int], degree: int) -> int:
    return scale[degree % 7] + 12 * (degree // 7)


def _compose(p: dict[str, Any], clip_seconds: float, rng: np.random.Generator) -> dict[str, Any]:
    beat_s = 60.0 / p["tempo_bpm"]
    n_beats = int(math.ceil(clip_seconds / beat_s))
    d = p["density"]
    scale = _SCALES[p["mode"]]
    progression = _PROGRESSIONS[p["mode"]][p["progression"]]
    root = p["root_midi"]

    def chord_at(beat: float) -> int:
        return progression[(int(beat) // 4) % len(progression)]

    parts: dict[str, list[tuple[float, float, int, float]]] = {"melody": [], "chords": [],
                                                                "bass": []}
    # Melody: a random walk over the scale, snapped to a chord tone on every beat.
    target_rate = 2.0 ** (3.8 * d)  # melody notes per second, 1 to 14
    step = min((2.0, 1.0, 0.5, 0.25),
               key=lambda s: abs(math.log(target_rate * s * beat_s)))
    rest_probability = 0.3 * (1.0 - d)
    degree = int(rng.choice((0, 2, 4)))
    position = 0.0
    while position * beat_s < clip_seconds:
        if position > 0 and rng.random() < rest_probability:
            position += step
            continue
        degree = min(10, max(-3, degree + int(rng.choice(_MELODY_MOVES))))
        on_beat = position == int(position)
        if on_beat:
            tones = {(chord_at(position) + j) % 7 for j in (0, 2, 4)}
            degree = min((degree + o for o in (0, -1, 1, -2, 2)),
                         key=lambda m: (m % 7 not in tones, abs(m - degree)))
        velocity = 1.0 if position % 4 == 0 else (0.8 if on_beat else 0.45)
        parts["melody"].append((position * beat_s, 0.9 * step * beat_s,
                                root + 12 + _degree_semitones(scale, degree), velocity))
        position += step

    # Chords: 0 to 4 voices, struck every 4, 2 or 1 beats, voiced around the root's fifth.
    voices = 0 if d < 0.25 else 2 if d < 0.5 else 3 if d < 0.75 else 4
    chord_every = 4 if d < 0.5 else 2 if d < 0.8 else 1
    centre = root + 7
    for beat in range(0, n_beats, chord_every) if voices else ():
        k = chord_at(beat)
        pitches = []
        for j in (0, 2, 4):
            pc = (root + _degree_semitones(scale, k + j)) % 12
            pitches.append(centre - 6 + (pc - (centre - 6)) % 12)
        pitches.append(pitches[0] + 12)
        velocity = 0.9 if beat % 4 == 0 else 0.75
        for pitch in pitches[:voices]:
            parts["chords"].append((beat * beat_s, 0.95 * chord_every * beat_s, pitch, velocity))

    # Bass: the chord root an octave below, on every beat or every other beat.
    bass_every = 1 if d >= 0.6 else 2
    if d >= 0.35:
        for beat in range(0, n_beats, bass_every):
            pitch = root - 12 + _degree_semitones(scale, chord_at(beat)) % 12
            velocity = 1.0 if beat % 4 == 0 else 0.85
            parts["bass"].append((beat * beat_s, 0.8 * bass_every * beat_s, pitch, velocity))

    # Drums: kick on 1 and 3, snare on 2 and 4, hi-hat on eighths (sixteenths when dense).
    hits: dict[str, list[tuple[float, float]]] = {"kick": [], "snare": [], "hat": []}
    if p["drums"]:
        hat_step = 0.25 if d >= 0.75 else 0.5
        for beat in range(n_beats):
            kind = "kick" if beat % 4 in (0, 2) else "snare"
            hits[kind].append((beat * beat_s, 1.0 if beat % 4 == 0 else 0.9))
            if d > 0.6 and beat % 4 == 2:
                hits["kick"].append(((beat + 0.5) * beat_s, 0.7))
        for i in range(int(round(n_beats / hat_step))):
            position = i * hat_step
            hits["hat"].append((position * beat_s, 0.6 if position == int(position) else 0.3))
    marked_by = [name for name, every_beat in (
        ("drums", bool(p["drums"])), ("bass", bool(parts["bass"]) and bass_every == 1),
        ("chords", voices > 0 and chord_every == 1)) if every_beat]
    return {"beat_s": beat_s, "n_beats": n_beats, "parts": parts, "hits": hits,
            "beat_marked_by": marked_by}


# --------------------------------------------------------------------------------------------
# Rendering


def _harmonic_weights(timbre: str, n: int) -> np.ndarray:
    h = np.arange(1, n + 1, dtype=np.float64)
    odd = (h % 2) == 1
    if timbre == "saw":
        return 1.0 / h
    if timbre == "square":
        return np.where(odd, 1.0 / h, 0.0)
    if timbre == "reed":
        return np.where(odd, 1.0 / h, 0.35 / h)
    if timbre == "flute":
        return np.where(odd, 1.0, 0.3) / h**2
    w = np.zeros(n)  # organ: a few drawbars
    for harmonic, amplitude in ((1, 1.0), (2, 0.7), (3, 0.5), (4, 0.45), (6, 0.3), (8, 0.2)):
        if harmonic <= n:
            w[harmonic - 1] = amplitude
    return w


def _lowpass_gain(f_hz: np.ndarray | float, brightness: float) -> np.ndarray:
    """Magnitude of the brightness low-pass (second order, 12 dB/octave) at ``f_hz``."""
    return 1.0 / np.sqrt(1.0 + (np.asarray(f_hz, dtype=np.float64) / _lowpass_hz(brightness)) ** 4)


def _wavetable(timbre: str, f0: float, n_harmonics: int, brightness: float) -> np.ndarray:
    """One period of the note, RMS 1 before the low-pass, with the brightness low-pass applied."""
    h = np.arange(1, n_harmonics + 1, dtype=np.float64)
    w = _harmonic_weights(timbre, n_harmonics) * h ** (-2.0 * (1.0 - brightness))
    w /= math.sqrt(0.5 * float(np.sum(w * w)))
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1: n_harmonics + 1] = -0.5j * _TABLE_SIZE * w * _lowpass_gain(h * f0, brightness)
    return np.fft.irfft(spectrum, _TABLE_SIZE).astype(np.float32)


def _drum_samples(sample_rate: int, brightness: float,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    def t(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sample_rate)) / sample_rate

    tk = t(0.3)
    kick_hz = 45.0 + 90.0 * np.exp(-35.0 * tk)
    kick = np.sin(2 * np.pi * np.cumsum(kick_hz) / sample_rate) * np.exp(-10.0 * tk)
    kick += 0.6 * _noise(len(tk), rng) * np.exp(-400.0 * tk)  # the beater's click
    ts = t(0.22)
    snare = (0.7 * _noise(len(ts), rng) * np.exp(-25.0 * ts)
             + 0.5 * np.sin(2 * np.pi * 190.0 * ts) * np.exp(-35.0 * ts))
    th = t(0.05)
    hat = 0.5 * np.diff(_noise(len(th) + 1, rng)) * np.exp(-90.0 * th)
    samples = {}
    for name, gain, x in (("kick", 0.9, kick), ("snare", 0.5, snare), ("hat", 0.18, hat)):
        # The brightness low-pass, zero-phase, on the zero-padded hit (padding stops wrap-around).
        n = 2 * len(x)
        spectrum = np.fft.rfft(x, n) * _lowpass_gain(np.fft.rfftfreq(n, 1.0 / sample_rate),
                                                     brightness)
        samples[name] = (gain * np.fft.irfft(spectrum, n)[: len(x)]).astype(np.float32)
    return samples


def _render(p: dict[str, Any], score: dict[str, Any], config: SyntheticConfig,
            rng: np.random.Generator) -> np.ndarray:
    sr = config.sample_rate
    n_total = int(round(config.clip_seconds * sr))
    mix = np.zeros(n_total, dtype=np.float32)
    attack_s, decay_s = _envelope_times(p["articulation"], p["envelope"])
    release_s = 0.08 if decay_s is None else 0.03
    n_release = int(release_s * sr)
    envelopes: dict[tuple[int, int], np.ndarray] = {}
    tables: dict[tuple[str, int], np.ndarray] = {}
    # Oscillators run on a 32-bit fixed-point phase (one cycle = 2**32, wrapping is the modulo);
    # its top bits index the table.
    ramp = np.arange(n_total, dtype=np.uint32)
    shift = np.uint32(32 - _TABLE_BITS)

    def envelope(n_gate: int, n: int) -> np.ndarray:
        key = (n_gate, n)
        if key not in envelopes:
            t = np.arange(n) / sr
            env = np.minimum(1.0, t / attack_s)
            if decay_s is not None:
                env *= np.exp(-t / decay_s)
            if n > n_gate:
                env[n_gate:] *= np.linspace(1.0, 0.0, n_release, endpoint=False)[: n - n_gate]
            envelopes[key] = env.astype(np.float32)
        return envelopes[key]

    for part, notes in score["parts"].items():
        timbre = p[f"{'chord' if part == 'chords' else part}_timbre"]
        gain = _PART_GAIN[part]
        for start_s, gate_s, pitch, velocity in notes:
            f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            key = (timbre, pitch)
            if key not in tables:
                n_harmonics = max(1, min(40, int(0.45 * sr / f0)))
                tables[key] = _wavetable(timbre, f0, n_harmonics, p["brightness"])
            i0 = int(round(start_s * sr))
            n_gate = int(round(gate_s * sr))
            n = min(n_gate + n_release, n_total - i0)
            if n <= 0:
                continue
            increment = np.uint32(int(round(f0 / sr * 2.0**32)) & 0xFFFFFFFF)
            phase = ramp[:n] * increment
            phase += np.uint32(int(rng.integers(2**32, dtype=np.uint64)))
            phase >>= shift
            wave = tables[key][phase]
            wave *= envelope(n_gate, n)
            wave *= np.float32(gain * velocity)
            mix[i0: i0 + n] += wave

    if any(score["hits"].values()):
        samples = _drum_samples(sr, p["brightness"], rng)
        drum_gain = 10.0 ** (p["drum_gain_db"] / 20.0)
        for kind, hits in score["hits"].items():
            sample = samples[kind]
            for start_s, velocity in hits:
                i0 = int(round(start_s * sr))
                n = min(len(sample), n_total - i0)
                if n > 0:
                    mix[i0: i0 + n] += np.float32(drum_gain * velocity) * sample[:n]

    # Level: scale to the target RMS, then a soft ceiling so that loud clips do not clip.
    rms = math.sqrt(float(np.mean(np.square(mix)))) or 1.0
    mix *= np.float32(10.0 ** (p["level_dbfs"] / 20.0) / rms)
    ceiling = np.float32(0.95)
    if float(np.max(np.abs(mix))) > ceiling:
        mix /= ceiling
        np.tanh(mix, out=mix)
        mix *= ceiling
    mix += np.float32(10.0 ** (config.noise_floor_dbfs / 20.0)) * _noise(n_total, rng)
    return mix


@functools.lru_cache(maxsize=1)
def _noise_buffer() -> np.ndarray:
    return np.random.default_rng(0x5EED).standard_normal(_NOISE_SAMPLES, dtype=np.float32)


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise: a seeded excerpt of one fixed buffer (drawing fresh noise would
    cost more than the whole rest of a clip)."""
    if n > _NOISE_SAMPLES // 2:
        return rng.standard_normal(n, dtype=np.float32)
    start = int(rng.integers(_NOISE_SAMPLES - n))
    return _noise_buffer()[start: start + n]


def _lowpass_hz(brightness: float) -> float:
    return 500.0 * 2.0 ** (6.0 * brightness)


# --------------------------------------------------------------------------------------------
# Tags


def _statistics(p: dict[str, Any], score: dict[str, Any], clip_seconds: float,
                audio: np.ndarray) -> dict[str, Any]:
    _, decay_s = _envelope_times(p["articulation"], p["envelope"])
    onsets = 0
    audible_s = 0.0
    for notes in score["parts"].values():
        for start_s, gate_s, _, _ in notes:
            if start_s >= clip_seconds:
                continue
            onsets += 1
            length = gate_s if decay_s is None else min(gate_s, 3.0 * decay_s)
            audible_s += min(length, clip_seconds - start_s)
    samples = audio.astype(np.float64)
    rms = math.sqrt(float(np.mean(samples * samples)))
    return {
        "onset_rate_hz": onsets / clip_seconds,
        "polyphony": audible_s / clip_seconds,
        "beat_marked_by": score["beat_marked_by"],
        "rms_dbfs": 20.0 * math.log10(max(rms, 1e-12)),
        "n_notes": onsets,
    }


def _tags(p: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    tags = []
    if p["tempo_bpm"] >= FAST_MIN_BPM and stats["beat_marked_by"]:
        tags.append("fast")
    if p["tempo_bpm"] <= SLOW_MAX_BPM:
        tags.append("slow")
    tags.append(p["mode"])
    if stats["rms_dbfs"] >= LOUD_MIN_DBFS:
        tags.append("loud")
    if stats["rms_dbfs"] <= SOFT_MAX_DBFS:
        tags.append("soft")
    if p["brightness"] >= BRIGHT_MIN:
        tags.append("bright")
    if p["brightness"] <= DARK_MAX:
        tags.append("dark")
    if p["drums"]:
        tags.append("percussive")
    if p["articulation"] in ("sustained", "plucked"):
        tags.append(p["articulation"])
    if (stats["onset_rate_hz"] >= DENSE_MIN_ONSETS_HZ
            and stats["polyphony"] >= DENSE_MIN_POLYPHONY):
        tags.append("dense")
    if (stats["onset_rate_hz"] <= SPARSE_MAX_ONSETS_HZ
            and stats["polyphony"] <= SPARSE_MAX_POLYPHONY):
        tags.append("sparse")
    return tags


# --------------------------------------------------------------------------------------------
# Public API


def generate_clip(seed: int, config: SyntheticConfig | None = None,
                  overrides: Mapping[str, Any] | None = None,
                  ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """One clip: (mono float32 audio, its tags in ``TAGS`` order, its parameters).

    ``overrides`` fixes any of ``PARAMETERS`` (e.g. ``{"drums": True, "tempo_bpm": 150}``); the
    others are drawn from ``seed`` exactly as without overrides. The returned parameters are
    JSON-serialisable and include the measurements the tags were decided from.
    """
    config = config or SyntheticConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    p = _draw_parameters(seed, config)
    if overrides:
        _check_overrides(overrides)
        p.update(overrides)
    rng = np.random.default_rng([seed, 1])
    score = _compose(p, config.clip_seconds, rng)
    audio = _render(p, score, config, rng)
    stats = _statistics(p, score, config.clip_seconds, audio)
    tags = [t for t in _tags(p, stats) if t in config.tags]
    attack_s, decay_s = _envelope_times(p["articulation"], p["envelope"])
    params = {"rules_version": RULES_VERSION, "seed": seed, **p, "attack_s": attack_s,
              "decay_s": decay_s, "lowpass_hz": _lowpass_hz(p["brightness"]), **stats}
    return audio, [t for t in TAGS if t in tags], params


# The demo piece's section kinds and the parameters that make them.
_DEMO_SECTIONS = {
    "calm": {"tempo_bpm": 72.0, "mode": "minor", "level_dbfs": -34.0, "brightness": 0.2,
             "drums": False, "articulation": "sustained", "density": 0.2},
    "build": {"tempo_bpm": 108.0, "mode": "minor", "level_dbfs": -25.0, "brightness": 0.5,
              "drums": True, "articulation": "struck", "density": 0.55},
    "energetic": {"tempo_bpm": 144.0, "mode": "major", "level_dbfs": -15.0, "brightness": 0.85,
                  "drums": True, "articulation": "plucked", "density": 0.92},
}
_DEMO_ORDER = ("calm", "build", "energetic")


def demo_piece(seconds: float = 60.0, seed: int = 0, sample_rate: int = 16000,
               changes: Mapping[str, Mapping[str, Any]] | None = None,
               phrase_seconds: float | None = None,
               ) -> tuple[np.ndarray, list[tuple[float, float, list[str]]]]:
    """A piece that moves between calm passages (slow, soft, dark, sustained, sparse) and loud,
    dense, percussive ones, for demos of the live tagger.

    Returns (mono float32 audio, segments); each segment is (start_s, end_s, tags) and the
    segments tile the piece. Sections last 8-12 s and share one key; neighbours cross-fade over
    0.5 s, centred on the segment boundary. ``changes``: parameters of a section kind ("calm",
    "build", "energetic") set otherwise than by default, e.g. ``{"calm": {"drums": True}}``.

    ``phrase_seconds``: each section plays as consecutive phrases of equal length, at most this
    long, each a clip of its own that starts on the tonic as a data set's clips of that length
    do; a section's phrases share its parameters and instruments, and its tags are those every
    phrase has. None (the default): one clip a section.
    """
    if seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds!r}")
    if phrase_seconds is not None and not 1.0 <= phrase_seconds <= 600.0:
        raise ConfigError(f"phrase_seconds must be in [1, 600] or None, got {phrase_seconds!r}")
    unknown = sorted(set(changes or {}) - set(_DEMO_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section kind(s) {unknown}; known: {list(_DEMO_SECTIONS)}")
    rng = np.random.default_rng([seed, 3])
    root_midi = int(rng.integers(45, 57))
    lengths: list[float] = []
    while sum(lengths) < seconds:
        lengths.append(float(rng.uniform(8.0, 12.0)))
    lengths[-1] -= sum(lengths) - seconds
    if len(lengths) > 1 and lengths[-1] < 4.0:  # fold a short tail into the previous section
        tail = lengths.pop()
        lengths[-1] += tail
    fade_s = 0.5
    n_total = int(round(seconds * sample_rate))
    n_fade = int(round(fade_s * sample_rate))
    out = np.zeros(n_total)
    segments = []
    start_s = 0.0
    ramp = np.sin(0.5 * np.pi * (np.arange(n_fade) + 0.5) / n_fade) ** 2

    def place(audio: np.ndarray, at_s: float, first: bool, last: bool) -> None:
        # A clip renders half a fade before and after its place.
        audio = audio.astype(np.float64)
        if not first:
            audio[:n_fade] *= ramp
        if not last:
            audio[-n_fade:] *= ramp[::-1]
        i0 = int(round((at_s - fade_s / 2) * sample_rate))
        skip = max(0, -i0)
        i0 = max(0, i0)
        n = min(len(audio) - skip, n_total - i0)
        out[i0: i0 + n] += audio[skip: skip + n]

    for i, length in enumerate(lengths):
        kind = _DEMO_ORDER[i % len(_DEMO_ORDER)]
        overrides = {**_DEMO_SECTIONS[kind], **(changes or {}).get(kind, {}),
                     "root_midi": root_midi}
        phrases = 1 if phrase_seconds is None else math.ceil(length / phrase_seconds - 1e-9)
        phrase_s = length / phrases
        config = SyntheticConfig(sample_rate=sample_rate, clip_seconds=phrase_s + fade_s)
        tags: list[str] = []
        for j in range(phrases):
            audio, phrase_tags, params = generate_clip(int(rng.integers(2**31)), config,
                                                       overrides)
            if j == 0:  # the later phrases keep the first one's instruments and progression
                overrides = {name: params[name] for name in PARAMETERS}
                tags = phrase_tags
            else:
                tags = [t for t in tags if t in phrase_tags]
            place(audio, start_s + j * phrase_s, first=i == 0 and j == 0,
                  last=i == len(lengths) - 1 and j == phrases - 1)
        end_s = min(seconds, start_s + length)
        segments.append((round(start_s, 6), round(end_s, 6), tags))
        start_s = end_s
    return out.astype(np.float32), segments
