"""The handoff bundle: `genretag registry fetch champion --out DIR`, then the reference client in a process
that can import only numpy, soundfile, Pillow and onnxruntime gives the pipeline's own top 3."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_audio
from tests.export_support import audio_project, centroid_model, genre_audio
from typer.testing import CliRunner

from genretag import export, registry
from genretag.audio import decode
from genretag.config import preprocessing_spec
from genretag.contract import INPUT_NAME, OUTPUT_NAME
from genretag.spectrogram import to_model_input, waveform_to_images

FORBIDDEN = ("tensorflow", "keras", "librosa", "genretag", "mlflow", "tf2onnx")

# Runs in `python -S`: no site module, so no .pth files and no editable genretag; sys.path is
# the bundle, the standard library and the venv's site-packages, nothing else.
ISOLATED_CLIENT = r"""
import importlib.util, json, sys
bundle, audio, site_packages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:] = [bundle, *[p for p in sys.path if p], *site_packages]
import genretag_reference as reference

model = reference.load_model(bundle)
probabilities = reference.score_file(model, audio)
print(json.dumps({
    "top": reference.top(model, probabilities, 3),
    "probabilities": dict(zip(model.labels, probabilities.tolist())),
    "max_windows": model.max_windows,
    "loaded": sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[4]))),
    "genretag_findable": importlib.util.find_spec("genretag") is not None,
}))
"""


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory):
    """Export the (perfect on tones) centroid model, register it as champion, fetch it with the CLI."""
    from genretag.cli import app

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        params, paths = audio_project(tmp_path_factory.mktemp("handoff-project"))
        export.export_model(params, paths, keras_model=centroid_model(paths))
        assert registry.register_model(params, paths).alias == "champion"
        bundle = tmp_path_factory.mktemp("bundle") / "genretag-cnn"
        patch.setenv("GENRETAG_ROOT", str(paths.root))
        result = CliRunner().invoke(app, ["registry", "fetch", "champion", "--out", str(bundle)])
        assert result.exit_code == 0, result.output
        yield params, paths, bundle


def _run_isolated(bundle: Path, audio: Path, cwd: Path) -> dict:
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-c", ISOLATED_CLIENT, str(bundle), str(audio), json.dumps(site_packages), json.dumps(FORBIDDEN)],
        capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pipeline(params, paths, audio: Path) -> dict[str, float]:
    """genretag's own path: decode (librosa resampling when needed) -> spectrogram -> ONNX -> mean of windows."""
    from genretag.scoring import open_model, score_file

    decoded = decode(audio, sample_rate=params.audio.sample_rate)
    images = waveform_to_images(decoded.waveform, preprocessing_spec(params), max_windows=params.score.max_windows)
    session = export.onnx_session(paths.onnx_model)
    direct = session.run([OUTPUT_NAME], {INPUT_NAME: to_model_input(images)})[0].mean(axis=0)
    scored = score_file(open_model(paths.onnx_model, prefer_gpu=False), audio, max_windows=params.score.max_windows)
    np.testing.assert_allclose(list(scored.probabilities.values()), direct, atol=1e-6)
    return scored.probabilities


def _top3(probabilities: dict[str, float]) -> list[str]:
    return sorted(probabilities, key=probabilities.get, reverse=True)[:3]


def test_the_bundle_holds_the_contract_and_the_preprocessing_verbatim(fetched) -> None:
    params, paths, bundle = fetched
    assert {p.name for p in bundle.iterdir()} >= {
        "model.onnx", "labels.json", "preprocessing.json", "scoring.json", "genretag_spectrogram.py",
        "genretag_reference.py", "README.md", "MANIFEST.json", "MODEL_CARD.md",
    }
    src = Path(__file__).resolve().parents[2] / "src" / "genretag"
    assert (bundle / "genretag_spectrogram.py").read_bytes() == (src / "spectrogram.py").read_bytes()
    assert (bundle / "genretag_reference.py").read_bytes() == (src / "handoff" / "genretag_reference.py").read_bytes()
    assert (bundle / "model.onnx").read_bytes() == paths.onnx_model.read_bytes()
    assert json.loads((bundle / "labels.json").read_text()) == list(params.genres)
    spec = json.loads((bundle / "preprocessing.json").read_text())
    assert spec["image_size"] == [32, 32] and spec["sample_rate"] == params.audio.sample_rate
    scoring = json.loads((bundle / "scoring.json").read_text())
    assert scoring["max_windows"] == params.score.max_windows
    assert scoring["max_clips_per_run"] == (2**31 - 1) // (32 * 32 * 3)  # the linear centroid model's largest tensor: its input
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["registry_version"] == "1" and len(manifest["sha256"]) == 8


def test_the_reference_client_alone_gives_the_pipelines_top3(fetched, tmp_path) -> None:
    params, paths, bundle = fetched
    audio = write_audio(tmp_path / "jazzy.wav", genre_audio("jazz", 10.0, seed=99))

    isolated = _run_isolated(bundle, audio, tmp_path)
    assert isolated["loaded"] == [] and isolated["genretag_findable"] is False
    pipeline = _pipeline(params, paths, audio)
    assert [genre for genre, _ in isolated["top"]] == _top3(pipeline)
    assert isolated["top"][0][0] == "jazz"
    for genre, probability in pipeline.items():
        assert isolated["probabilities"][genre] == pytest.approx(probability, abs=1e-3)
    print(f"\nhandoff 22.05 kHz {pipeline}: max |diff| {max(abs(isolated['probabilities'][g] - p) for g, p in pipeline.items()):.2g}")

    # The command line of the reference module, as another team would run it.
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "genretag_reference.py"), str(audio), "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert [entry["genre"] for entry in printed["top"]] == _top3(pipeline)


def test_other_rates_and_channels_are_resampled_close_to_the_pipeline(fetched, tmp_path) -> None:
    """44.1 kHz stereo: the bundle's FFT resampler vs the pipeline's soxr - same ranking, close numbers."""
    params, paths, bundle = fetched
    left = genre_audio("rock", 7.0, seed=5)
    stereo = np.stack([np.interp(np.arange(2 * len(left)) / 2, np.arange(len(left)), left)] * 2, axis=1)
    audio = write_audio(tmp_path / "rock44k.wav", stereo.astype(np.float32), sample_rate=44100)

    isolated = _run_isolated(bundle, audio, tmp_path)
    pipeline = _pipeline(params, paths, audio)
    assert [genre for genre, _ in isolated["top"]] == _top3(pipeline) and isolated["top"][0][0] == "rock"
    gap = max(abs(isolated["probabilities"][g] - p) for g, p in pipeline.items())
    print(f"\nhandoff 44.1 kHz stereo {pipeline}: max |diff| {gap:.2g}")
    assert gap <= 1e-2
