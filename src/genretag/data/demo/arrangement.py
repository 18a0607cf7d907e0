"""Arrangement of one demo track: drums + bass + comping parts + melody, mixed and mastered.

:class:`_Track` plans a track from its recipe and generator (tempo, key, chords, where the excerpt
starts), writes its parts as notes and drum hits, renders them with the instruments and the kit, and
mixes and masters them (reverb, tone, swells, soft clipping, peak level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sp_fft

from genretag.core.errors import ConfigError
from genretag.data.demo.drums import _HIT, _decay, _filtered, _kit, _noise
from genretag.data.demo.instruments import _VOWELS, Timbre, _instrument, _render_note
from genretag.data.demo.recipes import _SCALES, Chord, DrumPattern, GenreRecipe, _midi_hz, _place, parse_progression


@dataclass
class _Note:
    start: float       # seconds
    duration: float    # seconds
    midi: float
    velocity: float
    bend: float = 0.0
    vowel: str = "a"


def _add(buffer: np.ndarray, start: int, x: np.ndarray) -> None:
    if start >= len(buffer) or start + len(x) <= 0:
        return
    if start < 0:
        x, start = x[-start:], 0
    end = min(len(buffer), start + len(x))
    buffer[start:end] += x[: end - start]


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.dot(x, x)) / x.size) if x.size else 0.0


def _drive(x: np.ndarray, amount: float) -> np.ndarray:
    """Soft clipping (tanh) of ``x`` scaled to unit peak; 0 leaves it clean."""
    if amount <= 0:
        return x
    x = x / max(float(np.abs(x).max()), 1e-9)
    return (np.tanh(amount * x) / math.tanh(amount)).astype(np.float32)


class _Track:
    """One track being made: its plan (tempo, key, chords, where the excerpt starts) and its parts."""

    def __init__(self, recipe: GenreRecipe, rng: np.random.Generator, sample_rate: int, duration_s: float):
        self.recipe, self.rng, self.sr = recipe, rng, sample_rate
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        self.bpm = u(recipe.tempo_bpm)
        self.swing = u(recipe.swing)
        self.beats = int(rng.choice(recipe.beats_per_bar))
        self.key = int(rng.integers(12))
        progression, scale = recipe.progressions[int(rng.integers(len(recipe.progressions)))]
        self.chords = parse_progression(progression)
        self.scale = _SCALES[scale]
        self.humanise = u(recipe.humanise_ms) / 1000.0
        self.phrase = int(rng.choice((4, 8)))
        self.beat_s = 60.0 / self.bpm
        self.bar_s = self.beat_s * self.beats
        self.steps = 4 * self.beats
        self.bar0 = int(rng.integers(self.phrase * len(self.chords)))  # where in the song the excerpt starts
        self.offset = u((0.0, self.bar_s))
        self.n_out = int(round(duration_s * sample_rate))
        self.n_bars = int(math.ceil((duration_s + self.offset) / self.bar_s)) + 1
        self.length = int((self.n_bars * self.bar_s + 3.0) * sample_rate)

    # timing -------------------------------------------------------------------------------
    def time(self, bar: int, step: float) -> float:
        """Seconds at sixteenth ``step`` of ``bar``: swing on the off-beat eighths, humanised timing."""
        beat, sub = divmod(step, 4.0)
        swung = 0.5 + self.swing / 6.0
        position = sub / 2.0 * swung if sub < 2.0 else swung + (sub - 2.0) / 2.0 * (1.0 - swung)
        t = (bar * self.beats + beat + position) * self.beat_s
        return t + float(self.rng.normal(0.0, self.humanise))

    def chord(self, bar: int) -> Chord:
        return self.chords[(bar + self.bar0) % len(self.chords)]

    def phrase_position(self, bar: int) -> int:
        return (bar + self.bar0) % self.phrase

    def pitch_classes(self, chord: Chord) -> list[int]:
        return [(self.key + chord.root + i) % 12 for i in chord.intervals]

    def voicing(self, chord: Chord, center: int = 60, size: int = 4) -> list[int]:
        notes = sorted({_place(pc, center - 6) for pc in self.pitch_classes(chord)})
        return notes[:size]

    # parts --------------------------------------------------------------------------------
    def render_notes(self, notes: Sequence[_Note], timbre: Timbre) -> np.ndarray:
        out = np.zeros(self.length, dtype=np.float32)
        cache: dict = {}
        for note in notes:
            y = _render_note(timbre, _midi_hz(note.midi), note.duration, note.velocity, sample_rate=self.sr,
                             rng=self.rng, bend=note.bend, vowel=note.vowel, cache=cache)
            _add(out, int(note.start * self.sr), y)
        return out

    def drums(self, pattern: DrumPattern) -> np.ndarray:
        rng, r = self.rng, self.recipe
        kit = _kit(str(rng.choice(r.kits)), rng, self.sr)
        out = np.zeros(self.length, dtype=np.float32)
        voices = [(name, getattr(pattern, name)) for name in ("kick", "snare", "hat", "open_hat", "ride", "clap", "rim")]
        for bar in range(self.n_bars):
            fill = self.phrase_position(bar) == self.phrase - 1 and rng.random() < r.fill_chance
            for name, steps in voices:
                if not steps:
                    continue
                if fill and name == "snare":
                    steps = pattern.fill
                for step, mark in enumerate(steps[: self.steps]):
                    if mark == "." or (mark == "r" and rng.random() > 0.3):
                        continue
                    gain = _HIT[mark] * float(rng.uniform(0.85, 1.1))
                    _add(out, int(self.time(bar, step) * self.sr), kit[name] * gain)
            if self.phrase_position(bar) == 0 and rng.random() < r.crash_chance:
                _add(out, int(self.time(bar, 0) * self.sr), kit["crash"])
        return out

    def bass_line(self, style: str, pattern: DrumPattern | None) -> list[_Note]:
        rng, notes, step_s = self.rng, [], self.beat_s / 4.0
        low = self.recipe.bass_low
        for bar in range(self.n_bars):
            chord, following = self.chord(bar), self.chord(bar + 1)
            root = _place((self.key + chord.root) % 12, low)
            fifth = root + 7 if chord.intervals[:3] != (0, 3, 6) else root + 6
            third = root + chord.intervals[1]
            next_root = _place((self.key + following.root) % 12, low)
            hits: list[tuple[float, float, float]] = []  # (step, length in steps, midi)
            if style == "whole":
                hits = [(0, self.steps, root)]
            elif style == "broken":
                hits = [(s, 2, (root, fifth, root + 12, fifth)[(s // 2) % 4]) for s in range(0, self.steps, 2)]
            elif style == "boom_chick":
                hits = [(0, 3, root), (8, 3, fifth - 12 if fifth - 12 >= low - 5 else fifth)] if self.steps == 16 else [(0, 3, root)]
            elif style == "walking":
                tones = [root, int(rng.choice([third, fifth, root + 12])), int(rng.choice([fifth, third, root + 10])),
                         next_root + int(rng.choice([-1, 1, -2]))]
                hits = [(4 * b, 3.6, tones[b % 4]) for b in range(self.beats)]
            elif style == "boogie":
                line = (0, 0, 4, 4, 7, 7, 9, 10) if chord.intervals[1] == 4 else (0, 0, 3, 3, 7, 7, 8, 10)
                hits = [(2 * i, 1.8, root + line[i % 8]) for i in range(self.steps // 2)]
            elif style == "octave":
                hits = [(2 * i, 1.4, root + (12 if i % 2 else 0)) for i in range(self.steps // 2)]
            elif style == "eighths":
                hits = [(2 * i, 1.7, root) for i in range(self.steps // 2)]
                if rng.random() < 0.3:
                    hits[-1] = (self.steps - 2, 1.7, fifth)
            elif style == "sixteenths":
                hits = [(i, 0.8, root) for i in range(self.steps) if i % 4 != 1 or rng.random() < 0.7]
            elif style == "follow_kick":
                marks = [i for i, m in enumerate((pattern.kick if pattern else "x")[: self.steps]) if m != "."] or [0]
                bounds = marks[1:] + [self.steps]
                hits = [(m, max(b - m, 1) * 0.95, root + (12 if rng.random() < 0.1 else 0)) for m, b in zip(marks, bounds)]
            elif style == "reggae":
                figure = [(0, 3, root), (3, 1, root), (6, 2, fifth), (10, 2, root + 12 if rng.random() < 0.3 else root),
                          (12, 2, third), (14, 2, fifth)]
                if rng.random() < 0.5:  # the dub drop: rest on the one
                    figure = figure[1:]
                hits = [h for h in figure if h[0] < self.steps]
            else:
                raise ConfigError(f"demo recipe: unknown bass style {style!r}")
            for step, length, midi in hits:
                notes.append(_Note(self.time(bar, step), length * step_s, midi, float(rng.uniform(0.75, 1.0))))
        return notes

    def comp_part(self, style: str) -> list[_Note]:
        rng, notes, step_s = self.rng, [], self.beat_s / 4.0
        center = int(rng.integers(55, 66))
        arp_grid = int(rng.choice([2, 2, 1]))
        skank = (2, 6, 10, 14) if rng.random() < 0.5 else (4, 12)  # every off-beat, or beats two and four
        for bar in range(self.n_bars):
            chord = self.chord(bar)
            voicing = self.voicing(chord, center)
            root = _place((self.key + chord.root) % 12, self.recipe.bass_low + 9)
            power = [root, root + 7, root + 12]

            def chord_at(step: float, length: float, tones: Sequence[int], velocity: float, strum: float = 0.0) -> None:
                start = self.time(bar, step)
                for k, midi in enumerate(tones):
                    notes.append(_Note(start + k * strum, length * step_s, midi, velocity * float(rng.uniform(0.85, 1.0))))

            if style == "pad":
                chord_at(0, self.steps, voicing, 0.7)
            elif style == "block":
                for beat in range(self.beats):
                    chord_at(4 * beat, 3.0, voicing, 0.8 if beat % 2 == 0 else 0.65)
            elif style == "arpeggio":
                grid = arp_grid
                tones = voicing + [voicing[0] + 12]
                for i, step in enumerate(range(0, self.steps, grid)):
                    notes.append(_Note(self.time(bar, step), grid * step_s * 1.8, tones[i % len(tones)], 0.6))
            elif style == "roll":  # banjo forward roll: sixteenths over the chord, an octave up
                tones = [v + 12 for v in voicing[:3]]
                for i in range(self.steps):
                    notes.append(_Note(self.time(bar, i), 1.5 * step_s, tones[(i % 8) % 3], 0.8 if i % 4 == 0 else 0.6))
            elif style == "alberti":
                tones = voicing[:3]
                order = (0, 2, 1, 2)
                for i, step in enumerate(range(0, self.steps, 2)):
                    notes.append(_Note(self.time(bar, step), 2.2 * step_s, tones[order[i % 4]], 0.55))
            elif style == "shuffle":
                for i in range(self.steps // 2):
                    sixth = 9 if i % 4 in (1, 2) else 7
                    chord_at(2 * i, 1.7, [root, root + sixth], 0.8 if i % 2 == 0 else 0.6, strum=0.004)
            elif style == "strum":
                for i, d in enumerate("D.DU.UDU"[: self.steps // 2]):
                    if d != ".":
                        tones = voicing if d == "D" else voicing[::-1]
                        chord_at(2 * i, 2.5, [voicing[0] - 12] + tones if d == "D" else tones, 0.8 if d == "D" else 0.55,
                                 strum=float(rng.uniform(0.006, 0.014)))
            elif style == "open8":  # full chords, third included
                third = 3 if chord.intervals[1] == 3 else 4
                for i in range(self.steps // 2):
                    chord_at(2 * i, 1.8, [root, root + 7, root + 12, root + 12 + third, root + 19], 0.85 if i % 2 == 0 else 0.7,
                             strum=0.004)
            elif style == "power8":
                for i in range(self.steps // 2):
                    chord_at(2 * i, 1.8, power, 0.85 if i % 2 == 0 else 0.75)
            elif style == "power_sustain":
                half = self.steps // 2
                chord_at(0, half * 0.98, power, 0.9)
                chord_at(half, half * 0.98, power, 0.85)
            elif style == "chug":
                for i in range(self.steps):
                    if i % 4 == 1 and rng.random() < 0.4:
                        continue
                    chord_at(i, 0.5, power[:2], 0.8)
            elif style == "skank":
                for step in skank:
                    if step < self.steps:
                        chord_at(step, 0.7, [v + 12 for v in voicing], 0.8, strum=0.003)
            elif style == "bubble":
                for i in range(self.steps // 2):
                    tones = voicing if i % 2 else voicing[:1]
                    chord_at(2 * i, 1.2, tones, 0.55 if i % 2 else 0.35)
            elif style == "charleston":
                rhythm = [(0, 3), (6, 2)] if rng.random() < 0.5 else [(float(rng.choice([2, 4, 6])), 2), (float(rng.choice([10, 12, 14])), 2)]
                ninth = [v for v in voicing] + ([voicing[0] + 14] if rng.random() < 0.5 else [])
                for step, length in rhythm:
                    if step < self.steps:
                        chord_at(step, length, ninth, float(rng.uniform(0.55, 0.85)))
            elif style == "stabs":
                chord_at(0, 1.5, [v + 12 for v in voicing], 0.8)
                chord_at(6, 1.0, [v + 12 for v in voicing], 0.65)
                chord_at(10, 4.0, [v + 12 for v in voicing], 0.7)
            elif style == "chops":
                for i in range(self.steps):
                    if i % 2 == 1 or rng.random() < 0.3:
                        chord_at(i, 0.4, [v + 12 for v in voicing[1:]], 0.5 + 0.3 * (i % 4 == 2))
            elif style == "loop":
                for step, length in ((0, 6), (6, 2), (8, 6), (14, 2))[: 4 if self.steps == 16 else 2]:
                    chord_at(step, length, voicing, 0.7)
            else:
                raise ConfigError(f"demo recipe: unknown comping style {style!r}")
        return notes

    def melody(self, instrument: str) -> list[_Note]:
        rng, r, notes = self.rng, self.recipe, []
        step_s = self.beat_s / 4.0
        grid = int(rng.choice(r.lead_grid))
        density = float(rng.uniform(*r.lead_density))
        rap = instrument == "rap"
        center = {"violin": 74, "fiddle": 72, "string_line": 76, "flute": 79, "harmonica": 70, "blues_guitar": 67,
                  "steel": 69, "twang": 67, "sax": 64, "trumpet": 70, "vibes": 72, "synth_lead": 72, "lead_guitar": 69,
                  "melodica": 72, "bell": 79, "voice": 64, "rap": 50}[instrument]
        pitches = [m for m in range(center - 12, center + 13) if (m - self.key) % 12 in self.scale]
        position = len(pitches) // 2
        bend_chance = {"blues_guitar": 0.35, "harmonica": 0.3, "steel": 0.5, "lead_guitar": 0.25, "twang": 0.2}.get(instrument, 0.0)
        legato = instrument in ("violin", "flute", "string_line", "voice", "sax", "steel", "melodica", "synth_lead")
        for bar in range(self.n_bars):
            if bar == 0 or self.phrase_position(bar) == 0:
                active = rng.random() < 0.85
            if not active:
                continue
            chord_pcs = self.pitch_classes(self.chord(bar))
            slots = list(range(0, self.steps, grid))
            for step in slots:
                if rng.random() > density:
                    continue
                if rap:
                    midi = center + float(rng.normal(0, 1.5)) - 2.0 * (step / self.steps)
                    length = grid * float(rng.uniform(0.6, 1.0))
                    notes.append(_Note(self.time(bar, step), max(length * step_s, 0.07), midi, float(rng.uniform(0.6, 1.0)),
                                       bend=float(rng.uniform(-1.5, 1.5)), vowel=str(rng.choice(list(_VOWELS)))))
                    continue
                position = int(np.clip(position + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pitches) - 1))
                if step % 4 == 0 and rng.random() < 0.6:  # strong beats lean on chord tones
                    near = [i for i, m in enumerate(pitches) if m % 12 in chord_pcs]
                    if near:
                        position = min(near, key=lambda i: abs(i - position))
                length = grid * (float(rng.choice([1, 1, 2])) if legato else float(rng.uniform(0.5, 1.0)))
                bend = float(rng.choice([1.0, 2.0])) if rng.random() < bend_chance else 0.0
                notes.append(_Note(self.time(bar, step), length * step_s * (1.05 if legato else 1.0), pitches[position],
                                   float(rng.uniform(0.6, 1.0)), bend=bend, vowel=str(rng.choice(list(_VOWELS)))))
        return notes

    # mix ----------------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        """Drums, bass, comping and melody, each balanced by RMS at its level, then mastered."""
        rng, r = self.rng, self.recipe
        u = lambda x: float(rng.uniform(*x))  # noqa: E731
        levels = [10.0 ** (u(x) / 20.0) for x in r.mix_db]
        drive = u(r.drive)
        pattern = r.drums[int(rng.integers(len(r.drums)))] if r.drums else None
        buses: list[tuple[np.ndarray, float]] = []

        if pattern is not None:
            buses.append((self.drums(pattern), levels[0]))

        bass_style, bass_instrument = r.bass[int(rng.integers(len(r.bass)))]
        bass_timbre = replace(_instrument(bass_instrument, rng), max_hz=u((400.0, 2000.0)))
        bass = self.render_notes(self.bass_line(bass_style, pattern), bass_timbre)
        if drive > 4.0:
            bass = _drive(bass, drive / 6.0)
        buses.append((bass, levels[1]))

        comp = np.zeros(self.length, dtype=np.float32)
        for style, instrument in r.comp[int(rng.integers(len(r.comp)))]:
            part = self.render_notes(self.comp_part(style), _instrument(instrument, rng))
            part = self._process(part, instrument, drive)
            if style == "pad" and r.pump[1] > 0:
                part = part * self._pump(u(r.pump))
            comp += part * np.float32(u((0.6, 1.0)) / max(_rms(part), 1e-9))
        buses.append((comp, levels[2]))

        lead_instrument = str(rng.choice(r.lead))
        if lead_instrument:
            lead = self.render_notes(self.melody(lead_instrument), _instrument(lead_instrument, rng))
            lead = self._process(lead, lead_instrument, drive)
            if _rms(lead) > 0:
                buses.append((lead, levels[3]))

        mix = np.zeros(self.length, dtype=np.float32)
        for bus, level in buses:
            mix += bus * np.float32(level / max(_rms(bus), 1e-9))
        return self._master(mix)

    def _pump(self, depth: float) -> np.ndarray:
        """Side-chain ducking: the level dips on every beat and recovers within it."""
        t = np.arange(self.length, dtype=np.float32) / np.float32(self.sr)
        since_beat = np.mod(t, np.float32(self.beat_s))
        return np.float32(1.0) - np.float32(depth) * np.exp(-since_beat / np.float32(0.25 * self.beat_s))

    def _process(self, part: np.ndarray, instrument: str, drive: float) -> np.ndarray:
        """Guitars through a soft-clipping amp and a cabinet low-pass."""
        if instrument in ("power_guitar", "lead_guitar"):
            amount = drive
        elif instrument in ("blues_guitar", "twang", "clean_guitar"):
            amount = min(drive, 4.0) * 0.5
        else:
            return part
        if amount <= 0:
            return part
        return _filtered(_drive(part, amount), "lowpass", float(self.rng.uniform(3500, 6500)), self.sr)

    def _master(self, mix: np.ndarray) -> np.ndarray:
        """Reverb + tone (one FFT), slow level swells, soft-clip "bus compression", excerpt, peak level."""
        rng, r, sr = self.rng, self.recipe, self.sr
        u = lambda x: float(rng.uniform(*x))  # noqa: E731
        wet, room = u(r.reverb), u(r.room_s)
        room_n = int(room * sr)
        start = int(self.offset * sr)
        first = max(0, start - room_n)  # the reverb needs the music just before the excerpt
        excerpt = mix[first : start + self.n_out].copy()
        if "vinyl" in r.extras and rng.random() < 0.5:
            excerpt += self._vinyl(len(excerpt), u((0.01, 0.04)))
        size = sp_fft.next_fast_len(len(excerpt) + room_n, real=True)
        freqs = np.fft.rfftfreq(size, 1.0 / sr).astype(np.float32)
        cutoff = np.float32(u(r.brightness_hz))
        response = (1.0 / np.sqrt(1.0 + (freqs / cutoff) ** 4)) * (1.0 / np.sqrt(1.0 + (30.0 / np.maximum(freqs, 1.0)) ** 4))
        response = response.astype(np.complex64)
        if wet > 0:
            tail = _filtered(_noise(rng, room_n), "lowpass", u((3000.0, 7000.0)), sr) * _decay(room_n, room / 6.9, sr)
            tail *= np.float32(wet / max(math.sqrt(float(np.dot(tail, tail))), 1e-9))
            tail[0] += 1.0  # the dry signal
            response *= sp_fft.rfft(tail, size)
        out = sp_fft.irfft(sp_fft.rfft(excerpt, size) * response, size)[start - first : start - first + self.n_out]
        out = out.astype(np.float32)
        swell_db = u(r.swell_db)
        if swell_db > 0:
            t = (np.arange(len(out), dtype=np.float32) + np.float32(start)) / np.float32(sr)
            swing = np.sin(np.float32(2 * np.pi / u((8.0, 24.0))) * t + np.float32(u((0, 2 * np.pi))))
            out *= np.power(np.float32(10.0), np.float32(swell_db / 40.0) * swing)
        # "bus compression": soft clip relative to the excerpt's own RMS, so that crest factors vary
        out = np.tanh(out * np.float32(u(r.master_drive) * 0.25 / max(_rms(out), 1e-9)))
        return (out * np.float32(u((0.3, 0.9)) / max(float(np.abs(out).max()), 1e-9))).astype(np.float32)

    def _vinyl(self, n: int, level: float) -> np.ndarray:
        """Hiss and crackle (the master's low-pass shapes the hiss)."""
        rng = self.rng
        noise = _noise(rng, n) * np.float32(0.15)
        positions = rng.integers(0, n, size=int(n / self.sr * 8))
        noise[positions] += rng.uniform(-1, 1, size=len(positions)).astype(np.float32)
        return noise * np.float32(level)
