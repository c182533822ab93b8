"""Held-out openttd-openmsx tunes played by one instrument: each MIDI file's program changes
rewritten to one General MIDI program (0: acoustic grand piano, 48: string ensemble) and its
drums silenced, rendered with FluidR3 GM. The tune is the package's, the instrument is known."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from support.content_material import OPENMSX, RATE, SOUNDFONT, run

from streamtag.audio.files import load_audio

PIANO, STRINGS = 0, 48
DRUMS = 9  # General MIDI's percussion channel (the tenth)


def _varlen(data: bytes | bytearray, i: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i


def one_program(data: bytes, program: int) -> bytes:
    """A Standard MIDI File with every program change set to ``program`` and each note of
    the drum channel at velocity 0 (a note off)."""
    if data[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File")
    out, i = bytearray(data[:14]), 14
    while i < len(data):
        kind, length = data[i:i + 4], struct.unpack(">I", data[i + 4:i + 8])[0]
        body = bytearray(data[i + 8:i + 8 + length])
        i += 8 + length
        j, status = 0, 0
        while kind == b"MTrk" and j < len(body):
            _, j = _varlen(body, j)  # the event's delta time
            if body[j] == 0xFF:  # meta: type, length, data
                size, k = _varlen(body, j + 2)
                j = k + size
                continue
            if body[j] in (0xF0, 0xF7):  # system exclusive
                size, k = _varlen(body, j + 1)
                j = k + size
                continue
            if body[j] & 0x80:
                status, j = body[j], j + 1
            kind_bits, channel = status & 0xF0, status & 0x0F
            if kind_bits == 0xC0:
                body[j] = program
            elif kind_bits == 0x90 and channel == DRUMS:
                body[j + 1] = 0
            j += 1 if kind_bits in (0xC0, 0xD0) else 2
        out += kind + struct.pack(">I", len(body)) + body
    return bytes(out)


def tune(folder: Path, name: str, program: int, seconds: float, start_s: float) -> np.ndarray:
    """``seconds`` of openmsx's ``name``.mid from ``start_s``, every part played by
    ``program``."""
    midi = folder / f"{name}-{program}.mid"
    midi.write_bytes(one_program((OPENMSX / f"{name}.mid").read_bytes(), program))
    out = midi.with_suffix(".wav")
    run("fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(out), str(SOUNDFONT),
        str(midi))
    return load_audio(out, RATE)[0][round(start_s * RATE): round((start_s + seconds) * RATE)]
