"""The MODEL_CARD.md shipped beside every exported candidate: intended use, data (with the demo corpus's
warning), metrics, parity, calibration, limitations, the ONNX contract and how to call it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genretag.core.config import Params
from genretag.data.ingest import read_table
from genretag.evaluation.calibration import Calibration, TrackCalibration
from genretag.onnx.contract import EMBEDDING_NAME, FITTED_ON_VALIDATION, INPUT_NAME, OUTPUT_NAME, ModelContract, OpenSet
from genretag.training.parity import ParityReport, TestClips

_GTZAN_LIMITS = """\
- **GTZAN's known faults** (Sturm 2013, "The GTZAN dataset: its contents, its faults, their
  effects on evaluation"): exact and near duplicates (about 7 % of excerpts), repeated artists
  within a genre (a classifier can learn the artist, not the genre), mislabelled excerpts,
  recordings with distortion and clipping, and one unreadable file (jazz.00054) in common copies.
  GTZAN as a whole is 1,000 excerpts of 30 s, mostly 1990s-2000s Western radio: not a sample of any catalog.
- **Leaky clip split in the paper**: the source paper cuts every track into 10 clips and splits
  the *clips* at random, so clips of the same track land in training and test. Its test accuracy
  measures recognising tracks already heard, not genres. genretag splits by track by default
  (`split.method: track`); `filtered` uses the artist-filtered split of Kereliuk et al. (2015)."""


def split_counts(clips_csv: Path) -> dict[str, tuple[int, int]]:
    """Split -> (tracks, clips) counted in data/clips.csv (columns ``split``, ``track_id``); {} when absent."""
    if not clips_csv.is_file():
        return {}
    clips = read_table(clips_csv)
    grouped = clips.groupby("split", sort=False)["track_id"]
    return {str(split): (int(ids.nunique()), int(len(ids))) for split, ids in grouped}


def _counts_line(params: Params, counts: Mapping[str, tuple[int, int]]) -> str:
    """The real amount of data per split, e.g. "train 48 tracks / 472 clips; ..." (clips of 3 s)."""
    if not counts:
        return f"- Clips: at most {params.audio.clips_per_track} x {params.audio.clip_seconds:g} s per track (data/clips.csv not found)"
    order = {"train": 0, "validation": 1, "test": 2}
    parts = [f"{split} {tracks:,} tracks / {clips:,} clips" for split, (tracks, clips)
             in sorted(counts.items(), key=lambda item: order.get(item[0], 3))]
    total_tracks = sum(tracks for tracks, _ in counts.values())
    total_clips = sum(clips for _, clips in counts.values())
    return (f"- Data: {total_tracks:,} tracks cut into {total_clips:,} clips of {params.audio.clip_seconds:g} s "
            f"(at most {params.audio.clips_per_track} per track): {'; '.join(parts)}")


def _data_section(params: Params, test: TestClips, counts: Mapping[str, tuple[int, int]]) -> str:
    source = params.ingest.source
    split_note = {
        "track": "split by track (every clip of a track lands in one split)",
        "clip": "**split by clip, as in the paper: LEAKY** - clips of one track are in training and test, "
        "so the test metrics below are optimistic",
        "filtered": "artist-filtered split (Kereliuk et al. 2015)",
    }[params.split.method]
    if source == "demo":
        corpus = (
            "**SYNTHETIC DEMO CORPUS - not music.** The training data were synthesised by `genretag.data.demo` "
            f"({params.ingest.demo_tracks_per_genre} tracks per genre, seed {params.ingest.demo_seed}): each "
            "\"genre\" is a hand-written synthesis recipe (drums, bass, chords, melody, timbre), so that the "
            "pipeline can run end to end anywhere. A model that learns them has learnt the recipes. The metrics "
            "below measure how well it separates these synthetic recipes. **They say nothing about accuracy on "
            "real music; do not use this model to tag a real catalog.** Retrain on real data first "
            "(`ingest.source`; the README shows the paper's full configuration)."
        )
    elif source == "tfds":
        corpus = "GTZAN (via TensorFlow Datasets `gtzan`), 22,050 Hz excerpts of 30 s."
    else:
        corpus = f"A local folder in GTZAN layout (`ingest.source: {source}`), one sub-folder per genre."
    return (
        f"{corpus}\n\n"
        f"{_counts_line(params, counts)}; {split_note}.\n"
        f"- Test split used for the metrics and the parity check: {len(test)} clips "
        f"(fingerprint `{test.fingerprint()}`).\n"
    )


def _ece(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ece_table(*, first_column: str, rows: Sequence[tuple[str, float | None, float | None]]) -> str:
    """A Markdown table of expected calibration errors: a header (``first_column``, "ECE before", "ECE after"),
    then one line per ``(name, before, after)`` of ``rows``, each ECE to 4 decimals ("n/a" for None)."""
    lines = [f"| {first_column} | ECE before | ECE after |", "| --- | --- | --- |"]
    lines += [f"| {name} | {_ece(before)} | {_ece(after)} |" for name, before, after in rows]
    return "\n".join(lines) + "\n"


def _calibration_section(calibration: Calibration | None) -> str:
    """The card's "Calibration" section: method, T, and the ECE before and after on validation and test."""
    if calibration is None:
        return "## Calibration\n\nNot calibrated: `probabilities` are the model's own softmax.\n"
    how = (f"Temperature scaling (Guo et al. 2017, \"On Calibration of Modern Neural Networks\", ICML): the graph's\n"
           f"`probabilities` are Softmax(Log(p) / T) with **T = {calibration.temperature:.4g}**, fitted on "
           f"{calibration.fitted_on} validation clips by minimising the negative log-likelihood. T > 1 softens\n"
           "over-confident probabilities, T < 1 sharpens; the top-1 class and the embedding do not change."
           if calibration.applied else
           f"Not calibrated (T = 1): {calibration.reason}.")
    return (f"## Calibration\n\n{how}\n\n"
            f"Expected calibration error ({calibration.bins} equal-width confidence bins; 0 is perfect):\n\n"
            + _ece_table(first_column="split", rows=[("validation", calibration.ece_before, calibration.ece_after),
                                                     ("test", calibration.test_ece_before, calibration.test_ece_after)]))


def _track_calibration_section(record: TrackCalibration | None) -> str:
    """The card's "Track confidence" section: the track temperature, where it was fitted, and the track ECE before and after."""
    if record is None:
        return ""
    fitted = {"validation": "the validation tracks", "out-of-fold": "out-of-fold predictions over the training tracks "
              "(heads fitted on the other folds)"}.get(record.source, "no tracks")
    how = (f"The track confidence users read is the top value of softmax(log(mean window probability) / T_track) "
           f"(`genretag.onnx.contract.track_probabilities`, the one aggregation of the tagger, `predict` and the handoff clients) "
           f"with **T_track = {record.temperature:.4g}**, fitted by negative log-likelihood on {record.fitted_on} tracks: {fitted} "
           "(Guo et al. 2017, at track level). The top genre does not change."
           if record.method == "temperature" else f"Track confidence not rescaled (T_track = 1): {record.reason}.")
    return (f"\n## Track confidence\n\n{how}\n\n"
            f"Track-level expected calibration error ({record.bins} equal-width bins; 0 is perfect):\n\n"
            + _ece_table(first_column="tracks", rows=[(f"fitted on ({record.source or 'none'})", record.ece_before, record.ece_after),
                                                      ("test", record.test_ece_before, record.test_ece_after)]))


def _nearest(k: int) -> str:
    """"nearest" for k = 1, else "k-th nearest"."""
    return "nearest" if k == 1 else f"{k}-th nearest"


def _open_set_section(open_set: OpenSet | None) -> str:
    """The card's "Out-of-taxonomy" section: the method, its threshold and the share of validation tracks it accepts."""
    if open_set is None or not open_set.available:
        return ("## Out-of-taxonomy\n\nNo out-of-taxonomy score (too few train or validation tracks): the model "
                "always answers with one of its labels and cannot say \"none of these genres\".\n")
    return (f"## Out-of-taxonomy\n\nA track's score is the cosine distance (1 - cos) of its embedding (the mean of its windows' "
            f"`{open_set.output}`\noutput, {open_set.dimension}-d) to its {_nearest(open_set.neighbours)} of {open_set.bank_tracks} "
            "train tracks' embeddings, kept in the metadata\n(Sun et al. 2022, \"Out-of-Distribution Detection with Deep "
            f"Nearest Neighbors\", ICML, applied to tracks; method `{open_set.method}`). The track is\n"
            f"**unknown** (none of these genres) when it is above **{open_set.threshold:.4g}**, the threshold fitted "
            + (f"on the validation split\nonly to accept {open_set.accept:.0%} of its tracks: it accepts "
               f"{open_set.validation_accepted:.1%} of the {open_set.validation_tracks} validation tracks."
               if open_set.fitted_on == FITTED_ON_VALIDATION else
               f"leave-one-out (no validation split: the model\nwas trained on every labelled track): each of the "
               f"{open_set.validation_tracks} train tracks scored against the bank without itself,\nto accept "
               f"{open_set.accept:.0%} of them; it accepts {open_set.validation_accepted:.1%}.")
            + "\nAn unknown track keeps its top 3 genres for review; "
            "`unknown` is never written as a genre tag.\n")


def render_model_card(
    params: Params, contract: ModelContract, *, parity: ParityReport, test: TestClips,
    counts: Mapping[str, tuple[int, int]] | None = None, description: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None, track_calibration: TrackCalibration | None = None, open_set: OpenSet | None = None,
) -> str:
    """The MODEL_CARD.md shipped beside every exported candidate: ``counts`` from :func:`split_counts`,
    ``description`` the family's ``describe()`` (architecture, parameters, pretrained weights, recipe),
    ``calibration`` what :func:`calibrate_sealed` did (None: not calibrated), ``track_calibration`` what
    :func:`calibrate_track_level` did (None: no section), ``open_set`` the out-of-taxonomy record
    (:func:`genretag.training.open_set.attach_open_set`; None or absent: the card says there is none).
    Test metrics on audio and the gate's decision are added by the evaluate and register stages
    (metrics/candidates/<id>.json, models/GATE.md)."""
    described = dict(description or {})
    demo = params.ingest.source == "demo"
    architecture = described.get("architecture") or contract.family
    parameters = described.get("parameters") or described.get("trained_parameters")
    pretrained = described.get("pretrained")
    caveat = (
        "\n> These numbers come from the synthetic demo corpus and do not estimate accuracy on music.\n"
        if demo
        else (
            "\n> Clip split (leaky): these numbers are optimistic.\n" if params.split.method == "clip" else ""
        )
    )
    labels = ", ".join(f"{index}: {label}" for index, label in enumerate(contract.labels))
    calibrated = calibration is not None and calibration.applied
    confidence = ("Probabilities are temperature-scaled on the validation split (Calibration, above): on data like it, "
                  "clips given 0.8 are right about 80 % of the time; on other music that is not a guarantee."
                  if calibrated else "Probabilities are not calibrated; a high value is not a confidence guarantee.")
    preprocessing = json.dumps(contract.preprocessing, indent=2, sort_keys=True)
    _outside_labels = ("its out-of-taxonomy score flags some such tracks unknown, not all: see Out-of-taxonomy"
                       if open_set is not None and open_set.available else
                       "the model always answers with one of its labels;\nthere is no \"other\" class")
    return f"""# Model card: {contract.model_name}

| | |
| --- | --- |
| model name | `{contract.model_name}` |
| model version | `{contract.model_version}` (candidate id and its MLflow training run; the registry assigns its own version number at registration, see `genretag registry list`) |
| family | `{contract.family}`: {architecture} |
| parameters | {f"{parameters:,}" if isinstance(parameters, int) else "n/a"} |
| pretrained weights | {pretrained or "none (trained from scratch on the data below)"} |
| training data hash | `{contract.training_data_hash}` |
| git commit | `{contract.git_commit}` |
{"| **data** | **synthetic demo corpus - not real music** |" + chr(10) if demo else ""}
## Intended use

Suggest one of {len(contract.labels)} genre tags ({", ".join(contract.labels)}) for tracks of a music
catalog, to help editors search, browse and curate. A track is cut into {contract.clip_seconds:g}-s windows;
the window probabilities are averaged. The tag is a suggestion for people to review.

Not intended for: genres outside the label set ({_outside_labels}), non-Western or regional styles, speech, sound effects or mixed content,
decisions about royalties, rights, artists or playlists without human review.

## Data

{_data_section(params, test, counts or {})}
## Metrics (test split)

ONNX clip accuracy at export: {parity.onnx_test_accuracy:.4f} on {parity.test_clips} test clips. The evaluate stage scores
every candidate on the test tracks' audio (`metrics/candidates/<id>.json`: clip and track accuracy, macro-F1);
the register stage's gate compares them with intervals and a paired test (`models/GATE.md`).
{caveat}
## ONNX parity with the family's own framework (waveform in)

max |ONNX - reference| probability = {parity.max_abs_diff_test:.3g} on {parity.test_clips} test clips and
{parity.max_abs_diff_synthetic:.3g} on {parity.synthetic_clips} synthetic clips (music, noise, silence, clipping,
quiet music; tolerance {parity.tolerance:g}); top-1 class identical on every clip ({parity.near_ties} exact tie(s) not
compared); embedding max |diff| {parity.max_abs_diff_embedding:.3g}.

{_calibration_section(calibration)}{_track_calibration_section(track_calibration)}
{_open_set_section(open_set)}
## Limitations

- {"Trained on synthetic signals: it has never heard music. " if demo else ""}Genre is fuzzy and
  culturally defined; one label per track hides crossover music.
- Sees {contract.clip_seconds:g}-s windows at {contract.sample_rate} Hz: no long-range structure, nothing above
  {contract.sample_rate / 2:g} Hz. Other rates are resampled first.
- {confidence}
{_GTZAN_LIMITS}

## ONNX contract (v{contract.contract_version}: audio in, genres out)

- input `{INPUT_NAME}`: float32 [N, {contract.clip_samples}], mono, {contract.clip_seconds:g} s at
  {contract.sample_rate} Hz, full scale +-1, any batch size N. Resample other rates first (python-soxr).
- output `{OUTPUT_NAME}`: float32 [N, {len(contract.labels)}], softmax probabilities in label order{f", temperature-scaled (T = {calibration.temperature:.4g})" if calibrated else ""}.
- output `{EMBEDDING_NAME}`: float32 [N, D], the family's embedding (the representation its classifier reads).
- labels (index: genre): {labels}
- `metadata_props` (read with `genretag.contract.read_contract` or
  `session.get_modelmeta().custom_metadata_map`): `genretag.contract_version`, `genretag.sample_rate`,
  `genretag.clip_samples`, `genretag.family`, `genretag.labels`, `genretag.preprocessing`,
  `genretag.model_name`, `genretag.model_version`, `genretag.training_data_hash`,
  `genretag.git_commit`, `genretag.test_metrics`, `genretag.calibration`.
- preprocessing, computed inside the graph (`genretag.graph`; numpy references in `genretag/dsp/spectrogram.py`
  and `genretag/dsp/features.py`, checked by the parity gate above): nothing to re-implement.

```json
{preprocessing}
```

## How to call it

`genretag registry fetch champion --out DIR` writes the handoff bundle (`model.onnx`,
`labels.json`, a reference client). In code, with only a decoder, a resampler and onnxruntime:

```python
import json
import numpy as np
import onnxruntime as ort
import soundfile as sf

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels = json.loads(meta["genretag.labels"])
rate, size = int(meta["genretag.sample_rate"]), int(meta["genretag.clip_samples"])

samples, file_rate = sf.read("track.wav", dtype="float32", always_2d=True)
mono = samples.mean(axis=1)  # must be at `rate` Hz: resample with python-soxr otherwise
clips = mono[: len(mono) // size * size].reshape(-1, size)  # whole {contract.clip_seconds:g}-s windows
probabilities = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": clips}})[0].mean(axis=0)
track_t = json.loads(meta.get("genretag.track_calibration") or "{{}}").get("temperature", 1.0)  # calibrated track confidence
probabilities = np.exp(np.log(np.maximum(probabilities, 1e-12)) / track_t); probabilities /= probabilities.sum()
for index in np.argsort(probabilities)[::-1][:3]:
    print(labels[index], round(float(probabilities[index]), 3))
```
"""
