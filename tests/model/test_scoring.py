"""Scoring behaviour on a real onnxruntime session: providers, contract v2, equality with a direct computation,
silent windows, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tests.conftest import tone, write_audio
from tests.tagging_support import make_bad_files, make_good_files, make_onnx_model, make_root
from typer.testing import CliRunner

from genretag.audio.decoding import decode
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, cuda_batch_limit, largest_activation, read_contract
from genretag.core.environment import gpu_visible
from genretag.core.errors import AudioError, ScoringError
from genretag.onnx.session import CPU, CUDA, cuda_note, open_model
from genretag.registry.fetch import resolve_model
from genretag.tagging.scoring import score_decoded, score_file, score_files
from genretag.tagging.windows import cut_windows
from genretag.dsp.spectrogram import window_starts


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_onnx_model(tmp_path_factory.mktemp("models") / "tiny.onnx", version="7", seed=1)


@pytest.fixture(scope="module")
def model(onnx_path: Path):
    return open_model(onnx_path)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    make_good_files(folder / "good")
    make_bad_files(folder / "bad")
    return folder


def _cuda_active(model) -> bool:
    return model.provider == CUDA


def test_provider_is_read_back_from_the_session_and_a_missing_gpu_is_logged(onnx_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="genretag.onnx.session"):
        model = open_model(onnx_path)
    assert model.provider == model.session.get_providers()[0]
    if _cuda_active(model):
        pytest.skip("CUDA is active on this machine")
    assert model.provider == CPU
    assert model.requested == ((CUDA, CPU) if CUDA in ort.get_available_providers() else (CPU,))
    level, note = cuda_note(provider=model.provider, problem=model.cuda_problem)
    assert note in caplog.text and f"scoring on {CPU}" in note
    assert level == (logging.WARNING if gpu_visible() else logging.INFO)  # a note, not a warning, where no GPU is visible
    assert model.cuda_problem
    assert open_model(onnx_path, prefer_gpu=False).cuda_problem == ""


def test_require_gpu_fails_at_once_with_the_reason(onnx_path: Path, model) -> None:
    if _cuda_active(model):
        pytest.skip("CUDA is active on this machine")
    with pytest.raises(ScoringError, match="GPU required but CUDA is not active: "):
        open_model(onnx_path, require_gpu=True)


def test_the_gpu_batch_limit_follows_the_largest_activation() -> None:
    """cuDNN rejects tensors of 2^31 elements: on an H100 the paper's exp8 at 128x128 ran 1,023 clips and failed at 1,024."""
    from genretag.families.keras_images import network_to_onnx
    from genretag.families.paper_models import build_model

    exp8 = build_model("exp8", input_shape=(128, 128, 3), n_classes=10)
    proto = network_to_onnx(exp8, image_size=(128, 128), opset=17)
    keras_largest = max(int(np.prod(layer.output.shape[1:])) for layer in exp8.layers)

    assert largest_activation(proto) == keras_largest == 128 * 128 * 128  # conv1's output per clip
    assert cuda_batch_limit(proto) == 1023


def test_predict_runs_the_session_in_chunks_of_max_batch(onnx_path: Path, model, tmp_path: Path) -> None:
    import dataclasses

    import onnx

    fixed = onnx.load(str(onnx_path))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 3  # this copy accepts exactly 3 clips per run
    onnx.save(fixed, str(tmp_path / "fixed3.onnx"))
    batch = np.random.default_rng(5).normal(0.0, 0.1, (9, model.clip_samples)).astype(np.float32)
    three_at_a_time = dataclasses.replace(open_model(tmp_path / "fixed3.onnx"), max_batch=3)

    with pytest.raises(Exception, match="dimensions"):
        dataclasses.replace(three_at_a_time, max_batch=0).predict(batch, batch_size=9)
    chunked, whole = three_at_a_time.predict(batch, batch_size=9), model.predict(batch)
    np.testing.assert_allclose(chunked.probabilities, whole.probabilities, atol=1e-6)
    np.testing.assert_allclose(chunked.embedding, whole.embedding, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_predict_takes_any_batch_size(model, n: int) -> None:
    """Dynamic batch: 0, 1, 7 and 300 windows (300 runs as 256 + 44), each row as when scored alone."""
    waveforms = np.random.default_rng(n).normal(0.0, 0.1, (n, model.clip_samples)).astype(np.float32)
    prediction = model.predict(waveforms)
    assert prediction.probabilities.shape == (n, len(model.labels)) and prediction.probabilities.dtype == np.float32
    assert prediction.embedding.shape == (n, 16) and prediction.embedding.dtype == np.float32
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    if n:
        alone = model.predict(waveforms[-1:])
        np.testing.assert_allclose(prediction.probabilities[-1:], alone.probabilities, atol=1e-6)
    with pytest.raises(ScoringError, match=f"expected windows \\[n, {model.clip_samples}\\]"):
        model.predict(np.zeros((2, model.clip_samples - 1), dtype=np.float32))


def test_contract_comes_from_the_model_metadata(onnx_path: Path, model) -> None:
    contract = read_contract(onnx_path)
    assert model.labels == contract.labels
    assert (model.sample_rate, model.clip_samples, model.contract_version) == (22050, 66150, 2)
    assert (model.model_name, model.model_version) == ("genretag-cnn", "7")


def test_a_v1_image_contract_model_is_refused_with_one_line_saying_how_to_reexport(tmp_path: Path) -> None:
    old = make_onnx_model(tmp_path / "v1.onnx", version="3", contract_version=1)
    with pytest.raises(ScoringError) as caught:
        open_model(old)
    message = str(caught.value)
    assert "\n" not in message
    assert str(old) in message and "v1 image contract" in message and "mel_image" in message
    assert "re-export it with contract v2" in message


def test_input_and_output_names_and_shapes_are_checked(onnx_path: Path, tmp_path: Path) -> None:
    import onnx

    renamed = onnx.load(str(onnx_path))
    renamed.graph.input[0].name = "mel_image"
    for node in renamed.graph.node:
        node.input[:] = ["mel_image" if name == INPUT_NAME else name for name in node.input]
    onnx.save(renamed, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ScoringError, match="contract v2 needs input 'waveform' and outputs 'probabilities', 'embedding'"):
        open_model(tmp_path / "renamed.onnx")

    no_embedding = onnx.load(str(onnx_path))
    no_embedding.graph.output.pop()  # the embedding output
    assert [o.name for o in no_embedding.graph.output] == [OUTPUT_NAME]
    onnx.save(no_embedding, str(tmp_path / "no_embedding.onnx"))
    with pytest.raises(ScoringError, match=EMBEDDING_NAME):
        open_model(tmp_path / "no_embedding.onnx")

    sixteen_k = make_onnx_model(tmp_path / "16k.onnx", version="1", sample_rate=16000)  # 48,000 samples per window
    lying = onnx.load(str(sixteen_k))
    for entry in lying.metadata_props:
        if entry.key == "genretag.clip_samples":
            entry.value = "66150"
    onnx.save(lying, str(tmp_path / "lying.onnx"))
    with pytest.raises(ScoringError, match="takes 48000 samples per window but its contract says 66150"):
        open_model(tmp_path / "lying.onnx")


def _direct(model, wav: Path, *, max_windows: int) -> np.ndarray:
    """The direct route: decode at the model's rate -> windows -> session -> mean of the windows."""
    waveform = decode(wav, sample_rate=model.sample_rate).waveform
    starts = window_starts(len(waveform), clip_samples=model.clip_samples, max_windows=max_windows)
    session = ort.InferenceSession(str(model.path), providers=[CPU])
    windows = np.stack([waveform[s : s + model.clip_samples] for s in starts])
    return session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0].mean(axis=0)


def test_predictions_equal_a_direct_computation(model, audio: Path) -> None:
    wav = audio / "good" / "a" / "sine880.wav"
    expected = _direct(model, wav, max_windows=2)

    single = score_file(model, wav, max_windows=2)
    pooled = {  # batches that mix windows of several tracks, decoded in worker processes
        r.key: r for r in score_files(model, [(p.name, p) for p in sorted((audio / "good").rglob("*.*"))],
                                      max_windows=2, batch_size=3, workers=2)
    }
    for score in (single, pooled["sine880.wav"].score):
        assert score.windows_scored == 2 and score.windows_silent == 0
        got = np.array([score.probabilities[label] for label in model.labels])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert score.label == model.labels[int(np.argmax(expected))]
        assert score.confidence == pytest.approx(float(expected.max()), abs=1e-6)
        assert [g for g, _ in score.top3] == [model.labels[i] for i in np.argsort(-expected, kind="stable")[:3]]
        assert sum(score.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_tracks_are_decoded_at_the_models_sample_rate(audio: Path, tmp_path: Path) -> None:
    """A 16 kHz model gets 48,000-sample windows of a 44.1 kHz stereo file, resampled by genretag.audio."""
    model16 = open_model(make_onnx_model(tmp_path / "16k.onnx", version="16", sample_rate=16000, seed=3), prefer_gpu=False)
    flac = audio / "good" / "b" / "flac44k.flac"
    score = score_file(model16, flac)
    assert model16.clip_samples == 48000 and score.windows_scored == 2  # 6.5 s
    got = np.array([score.probabilities[label] for label in model16.labels])
    np.testing.assert_allclose(got, _direct(model16, flac, max_windows=0), atol=1e-6)


def test_silent_windows_are_skipped_and_counted(model, tmp_path: Path) -> None:
    """Issue 12 item 4: 3 s of zeros then 9 s of music -> 3 windows scored, 1 silent, the music's genre alone."""
    music = tone(9.0, frequency=330.0, seed=11)
    track = write_audio(tmp_path / "intro.wav", np.concatenate([np.zeros(66150, dtype=np.float32), music]))
    hiss = np.random.default_rng(12).standard_normal(66150).astype(np.float32) * 1e-4  # -80 dBFS
    quiet = write_audio(tmp_path / "quiet_intro.wav", np.concatenate([hiss, music]))

    music_only = model.predict(cut_windows(decode(track, sample_rate=22050).waveform[66150:], clip_samples=66150).waveforms)
    for path in (track, quiet):
        results = {r.key: r.score for r in score_files(model, [(path.name, path)], max_windows=0, parallel=False)}
        for score in (score_file(model, path), results[path.name]):
            assert (score.windows_scored, score.windows_silent) == (3, 1)
            got = np.array([score.probabilities[label] for label in model.labels])
            np.testing.assert_allclose(got, music_only.probabilities.mean(axis=0), atol=1e-6)
    # the threshold is the configured one: at -90 dBFS the -80 dBFS intro counts as sound, the zeros never do
    assert score_file(model, quiet, silence_rms_dbfs=-90.0).windows_scored == 4
    assert score_file(model, track, silence_rms_dbfs=-400.0).windows_scored == 3


def test_a_track_whose_every_window_is_silent_is_an_error(model, tmp_path: Path) -> None:
    """Zeros and near-silence (-70 dBFS hiss is below -60) in every window: "silent", nothing scored."""
    hiss = np.random.default_rng(13).standard_normal(7 * 22050).astype(np.float32) * 3e-4
    hum = write_audio(tmp_path / "hum.wav", np.concatenate([np.zeros(3 * 22050, dtype=np.float32), hiss]))
    with pytest.raises(AudioError, match="silent: all 3 windows are all-zero or below -60.0 dBFS RMS"):
        score_file(model, hum)
    [result] = score_files(model, [("hum", hum)], parallel=False)
    assert result.score is None and result.error.startswith("silent: all 3 windows")


def test_any_format_rate_and_length_is_scored(model, audio: Path) -> None:
    good = audio / "good"
    results = {r.key: r for r in score_files(model, [(p.name, p) for p in sorted(good.rglob("*.*"))],
                                             max_windows=5, parallel=False)}
    assert all(r.score is not None for r in results.values()), {k: r.error for k, r in results.items()}
    assert results["long70.wav"].score.windows_scored == 5  # 23 windows, 5 evenly spaced
    assert results["flac44k.flac"].score.windows_scored == 2  # 44.1 kHz stereo, 6.5 s
    assert results["ogg44k.ogg"].score.windows_scored == 2
    assert score_file(model, good / "long70.wav", max_windows=0).windows_scored == 23


def test_bad_files_get_a_reason_and_do_not_stop_the_others(model, audio: Path) -> None:
    expected = make_bad_files(audio / "bad")
    items = [(p.name, p) for p in sorted((audio / "bad").iterdir())] + [("good", audio / "good" / "a" / "sine220.wav")]
    results = {r.key: r for r in score_files(model, items, max_windows=3, workers=2)}
    assert results["good"].score is not None
    for name, fragment in expected.items():
        assert results[name].score is None
        assert fragment in results[name].error, (name, results[name].error)
    with pytest.raises(AudioError, match="silent"):
        score_file(model, audio / "bad" / "silent.wav")


def test_resolve_model_accepts_onnx_paths(onnx_path: Path, tmp_path: Path) -> None:
    assert resolve_model(str(onnx_path)) == onnx_path.resolve()
    with pytest.raises(ScoringError, match="no such ONNX file"):
        resolve_model(str(tmp_path / "missing.onnx"))


def test_a_file_that_is_not_a_model_is_a_scoring_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ScoringError, match="junk.onnx"):
        open_model(junk)


def test_cli_predict_prints_top3_and_names_the_unreadable_file(onnx_path: Path, audio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genretag.cli.app import app

    monkeypatch.setenv("GENRETAG_ROOT", str(make_root(tmp_path / "root", workers=1)))
    good = write_audio(tmp_path / "song.wav", tone(4.0, frequency=500.0))
    bad = audio / "bad" / "text.wav"
    result = CliRunner().invoke(app, ["predict", str(good), str(bad), "--model", str(onnx_path)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{good}  ") and lines[0].endswith("(1 windows)")
    assert len(lines[0].split("  ")) == 5  # path, three "genre probability", windows
    assert f"error: {bad}: not a decodable audio file" in result.stderr
    assert "1 of 2 files could not be scored" in result.stderr

    ok = CliRunner().invoke(app, ["predict", str(good), "--model", str(onnx_path)])
    assert ok.exit_code == 0 and ok.stdout.startswith(str(good))


def test_champion_and_version_numbers_resolve_through_the_mlflow_registry(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("genretag.registry")
    import mlflow
    import onnx
    from mlflow import MlflowClient

    from genretag.core.tracking import point_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("GENRETAG_MODEL_CACHE", str(tmp_path / "cache"))
    point_mlflow(uri)  # not mlflow.set_tracking_uri: that exports MLFLOW_TRACKING_URI to every later test
    experiment = mlflow.create_experiment("scoring-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="onnx-model", registered_model_name="genretag-cnn",
                              pip_requirements=["onnxruntime"], onnx_execution_providers=[CPU], save_as_external_data=False)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias("genretag-cnn", "champion", "1")

    champion = resolve_model("champion", tracking_uri=uri, model_name="genretag-cnn")
    assert read_contract(champion) == read_contract(onnx_path)
    assert resolve_model("1", tracking_uri=uri, model_name="genretag-cnn") == champion
    assert open_model(champion, prefer_gpu=False).model_version == "7"
    from genretag.core.errors import RegistryError

    with pytest.raises(RegistryError, match="challenger"):
        resolve_model("challenger", tracking_uri=uri, model_name="genretag-cnn")


def test_a_two_window_cap_on_a_ten_minute_track_scores_two_windows(model, tmp_path: Path) -> None:
    """Only the two windows are decoded (genretag.audio.seeking.decode_windows seeks), and they score as the
    same windows cut from the whole decoded track."""
    from tests.audio_files import long_track

    path = long_track(tmp_path / "ten-minutes.flac", minutes=10)
    score = score_file(model, path, max_windows=2)
    assert (score.windows_scored, score.windows_silent) == (2, 0)
    [pooled] = score_files(model, [("long", path)], max_windows=2, workers=1)
    assert pooled.score is not None and pooled.score.windows_scored == 2
    expected = _direct(model, path, max_windows=2)
    for result in (score, pooled.score):
        assert np.allclose([result.probabilities[label] for label in model.labels], expected, atol=1e-5)


def test_a_decoding_wait_is_used_to_score_what_is_ready(model) -> None:
    """A None from the decoders (the next track is not decoded yet) makes the tracks at hand score at
    once instead of waiting for a full batch: decoding and scoring overlap even for a few tracks."""
    windows = cut_windows(tone(7.0, sample_rate=model.sample_rate), clip_samples=model.clip_samples)
    pulled: list[str] = []

    def decoded():
        pulled.append("a")
        yield "a", "a.wav", windows, ""
        pulled.append("wait")
        yield None
        pulled.append("b")
        yield "b", "b.wav", windows, ""

    stream = score_decoded(model, decoded(), batch_size=256)
    first = next(stream)
    assert first.key == "a" and first.score.windows_scored == 2 and pulled == ["a", "wait"]
    assert [r.key for r in stream] == ["b"] and pulled == ["a", "wait", "b"]
