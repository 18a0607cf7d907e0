"""The handoff bundle of a contract-v2 model: its files, the Python reference client in a process that can import
only numpy, soundfile, python-soxr and onnxruntime, and the Node.js client (onnxruntime-node), against `genretag predict`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import tone, write_audio
from tests.tagging_support import make_onnx_model, make_root
from typer.testing import CliRunner

from genretag.core.errors import ExportError
from genretag.handoff import BUNDLE_FILES, CLIENT_FILES, client_sources, write_bundle
from genretag.onnx.session import open_model
from genretag.tagging.scoring import score_files

FORBIDDEN = ("tensorflow", "keras", "librosa", "genretag", "mlflow", "tf2onnx", "PIL", "scipy")
MAX_WINDOWS = 4
SILENCE_DBFS = -60.0

# Runs in `python -S`: no site module, so no .pth files and no editable genretag; sys.path is
# the bundle, the standard library and the venv's site-packages, nothing else.
ISOLATED_CLIENT = r"""
import importlib.util, json, sys
bundle, site_packages, forbidden = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
sys.path[:] = [bundle, *[p for p in sys.path if p], *site_packages]
import genretag_reference as reference

model = reference.load_model(bundle)
scores = {}
for audio in sys.argv[4:]:
    probabilities = reference.score_file(model, audio).probabilities
    scores[audio] = {"top": reference.top(model, probabilities, 3), "probabilities": dict(zip(model.labels, probabilities.tolist()))}
print(json.dumps({
    "scores": scores,
    "loaded": sorted({name.split(".")[0] for name in sys.modules} & forbidden),
    "genretag_findable": importlib.util.find_spec("genretag") is not None,
}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_onnx_model(tmp_path_factory.mktemp("model") / "model.onnx", version="5", seed=4)
    return write_bundle(model, tmp_path_factory.mktemp("bundle") / "genretag-cnn", max_windows=MAX_WINDOWS,
                        silence_rms_dbfs=SILENCE_DBFS, registry_version="3")


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """22.05 kHz mono PCM-16, a 15-s track (5 windows, 4 evenly spaced), a silent intro, 22.05 kHz stereo float."""
    folder = tmp_path_factory.mktemp("music")
    stereo = np.stack([tone(7.0, frequency=300.0, seed=31), tone(7.0, frequency=900.0, seed=32)], axis=1)
    return {
        "plain": write_audio(folder / "plain.wav", tone(7.0, frequency=500.0, seed=30)),
        "long": write_audio(folder / "long.wav", tone(15.0, frequency=200.0, seed=33)),
        "intro": write_audio(folder / "intro.wav", np.concatenate([np.zeros(66150, dtype=np.float32), tone(6.5, frequency=700.0, seed=34)])),
        "stereo": write_audio(folder / "stereo.wav", stereo, subtype="FLOAT"),
    }


def _run_isolated(bundle: Path, files: list[Path], cwd: Path) -> dict:
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-c", ISOLATED_CLIENT, str(bundle), json.dumps(site_packages), json.dumps(FORBIDDEN),
         *map(str, files)],
        capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _genretag(bundle: Path, files: list[Path]) -> dict[Path, object]:
    """genretag's own scores of ``files`` with the bundle's model and the bundle's settings."""
    model = open_model(bundle / "model.onnx", prefer_gpu=False)
    results = score_files(model, [(p, p) for p in files], max_windows=MAX_WINDOWS, silence_rms_dbfs=SILENCE_DBFS, parallel=False)
    return {r.key: r.score for r in results}


def test_the_bundle_holds_the_model_labels_settings_and_both_clients(bundle: Path) -> None:
    assert {p.name for p in bundle.iterdir()} == {*BUNDLE_FILES, "MANIFEST.json"}
    for name, source in client_sources().items():
        assert (bundle / name).read_bytes() == source.read_bytes()
    assert set(CLIENT_FILES) == {"genretag_reference.py", "genretag_reference.mjs", "package.json", "package-lock.json"}
    model = open_model(bundle / "model.onnx", prefer_gpu=False)
    assert json.loads((bundle / "labels.json").read_text()) == list(model.labels)
    scoring = json.loads((bundle / "scoring.json").read_text())
    assert scoring == {
        "contract_version": 2, "sample_rate": 22050, "clip_samples": 66150, "max_windows": MAX_WINDOWS, "evenly_spaced": True,
        "silence_rms_dbfs": SILENCE_DBFS, "aggregate": "mean", "max_clips_per_run": scoring["max_clips_per_run"],
    }
    assert scoring["max_clips_per_run"] == (2**31 - 1) // 66150  # the largest tensor per clip: the waveform
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["registry_version"] == "3" and manifest["input"] == "waveform"
    assert manifest["sha256"] == {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name in BUNDLE_FILES}
    package = json.loads((bundle / "package.json").read_text())
    lock = json.loads((bundle / "package-lock.json").read_text())
    pinned = package["dependencies"]["onnxruntime-node"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned) and lock["packages"]["node_modules/onnxruntime-node"]["version"] == pinned


def test_a_v1_model_gets_no_bundle(tmp_path: Path) -> None:
    old = make_onnx_model(tmp_path / "v1.onnx", version="0", contract_version=1)
    with pytest.raises(ExportError, match="v1 image contract .* re-export it with contract v2"):
        write_bundle(old, tmp_path / "bundle", max_windows=2, silence_rms_dbfs=SILENCE_DBFS)
    assert not (tmp_path / "bundle").exists()


def test_the_python_client_alone_equals_genretag_predict(bundle: Path, music: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Same probabilities as genretag's scorer (1e-6), same printed top 3 as `genretag predict`, for files at the
    model's rate, a silent intro, stereo, and 44.1 kHz / 16 kHz files that both resample with soxr."""
    files = [*music.values(),
             write_audio(tmp_path / "cd.flac", np.stack([tone(8.0, sample_rate=44100, frequency=440.0, seed=35)] * 2, axis=1), sample_rate=44100),
             write_audio(tmp_path / "phone.wav", tone(9.0, sample_rate=16000, frequency=250.0, seed=36), sample_rate=16000)]
    isolated = _run_isolated(bundle, files, tmp_path)
    assert isolated["loaded"] == [] and isolated["genretag_findable"] is False
    ours = _genretag(bundle, files)
    assert (ours[music["long"]].windows_scored, ours[music["intro"]].windows_scored, ours[music["intro"]].windows_silent) == (4, 2, 1)
    for path in files:
        client = isolated["scores"][str(path)]
        for genre, probability in ours[path].probabilities.items():
            assert client["probabilities"][genre] == pytest.approx(probability, abs=1e-6), path.name

    from genretag.cli.app import app

    monkeypatch.setenv("GENRETAG_ROOT", str(make_root(tmp_path / "root", max_windows=MAX_WINDOWS, workers=1)))
    predicted = CliRunner().invoke(app, ["predict", *map(str, files), "--model", str(bundle / "model.onnx")])
    assert predicted.exit_code == 0, predicted.output
    for path, line in zip(files, predicted.stdout.splitlines(), strict=True):
        client_top = "  ".join(f"{genre} {probability:.3f}" for genre, probability in isolated["scores"][str(path)]["top"])
        assert line.startswith(f"{path}  {client_top}  ("), (line, client_top)

    # The command line of the reference module, as another team would run it.
    done = subprocess.run([sys.executable, "-I", str(bundle / "genretag_reference.py"), str(music["plain"]), "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [e["genre"] for e in json.loads(done.stdout)["top"]] == [g for g, _ in isolated["scores"][str(music["plain"])]["top"]]


def _node_modules() -> Path:
    """onnxruntime-node as pinned by the bundle's package-lock.json, installed once per lock into a cache folder."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed: the Node.js reference client needs Node 18+ (CI has Node 20)")
    lock = client_sources()["package-lock.json"]
    digest = hashlib.sha256(lock.read_bytes() + client_sources()["package.json"].read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("GENRETAG_NODE_CACHE") or Path.home() / ".cache" / "genretag" / "node") / digest
    if not (cache / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        staging = cache.with_name(f"{digest}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(client_sources()[name], staging / name)
        # onnxruntime-node's install script fetches CUDA parts from a host that may be unreachable; the CPU binaries ship in the package.
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip", "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip"}
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=staging, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    return cache / "node_modules"


@pytest.mark.node
def test_the_node_client_matches_the_python_client(bundle: Path, music: dict[str, Path], tmp_path: Path) -> None:
    """WAV at the model's rate (PCM-16 mono, float stereo, a silent intro, more windows than max_windows): top 3 and
    every probability within 1e-4 of the Python client; a silent file is refused with a reason."""
    node_modules = _node_modules()
    folder = tmp_path / "node-bundle"
    shutil.copytree(bundle, folder)
    (folder / "node_modules").symlink_to(node_modules, target_is_directory=True)
    files = list(music.values())
    python = _run_isolated(folder, files, tmp_path)["scores"]

    done = subprocess.run(["node", str(folder / "genretag_reference.mjs"), "--json", *map(str, files)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["file"] for p in printed] == [str(f) for f in files]
    assert [p["windows"] for p in printed] == [2, MAX_WINDOWS, 2, 2]  # the silent intro window is skipped
    for node in printed:
        reference = python[node["file"]]
        assert [t["genre"] for t in node["top"]] == [g for g, _ in reference["top"]]
        for genre, probability in reference["probabilities"].items():
            assert node["probabilities"][genre] == pytest.approx(probability, abs=1e-4), (node["file"], genre)

    plain = subprocess.run(["node", str(folder / "genretag_reference.mjs"), str(music["plain"])],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    genres = [g for g, _ in python[str(music["plain"])]["top"]]
    assert plain.returncode == 0 and re.fullmatch(rf"{re.escape(str(music['plain']))}: {genres[0]} \S+, {genres[1]} \S+, {genres[2]} \S+\n", plain.stdout)

    silent = write_audio(tmp_path / "silent.wav", np.zeros(4 * 22050, dtype=np.float32))
    refused = subprocess.run(["node", str(folder / "genretag_reference.mjs"), str(silent)],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"{silent}: error: audio silent" in refused.stderr


@pytest.mark.node
def test_the_node_client_resamples_any_rate_answers_help_and_prints_the_python_clients_fields(
        bundle: Path, tmp_path: Path) -> None:
    """Issue 22: WAV at 44.1, 48, 16 and 8 kHz (mono and stereo) resampled by the Node client's windowed sinc scores
    as the Python client's soxr does (same top 3, probabilities within 2e-3); --help prints the usage and exits 0;
    --json prints the same keys, nesting and types as genretag_reference.py --json."""
    node_modules = _node_modules()
    folder = tmp_path / "node-bundle"
    shutil.copytree(bundle, folder)
    (folder / "node_modules").symlink_to(node_modules, target_is_directory=True)
    files = [write_audio(tmp_path / "cd.wav", np.stack([tone(7.0, sample_rate=44100, frequency=440.0, seed=40)] * 2, axis=1), sample_rate=44100),
             write_audio(tmp_path / "video.wav", tone(7.0, sample_rate=48000, frequency=1200.0, seed=41), sample_rate=48000, subtype="FLOAT"),
             write_audio(tmp_path / "wideband.wav", tone(7.0, sample_rate=16000, frequency=250.0, seed=42), sample_rate=16000),
             write_audio(tmp_path / "phone.wav", tone(7.0, sample_rate=8000, frequency=600.0, seed=43), sample_rate=8000)]
    node = subprocess.run(["node", str(folder / "genretag_reference.mjs"), "--json", *map(str, files)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert node.returncode == 0, node.stderr[-3000:]
    python = subprocess.run([sys.executable, "-I", str(folder / "genretag_reference.py"), "--json", *map(str, files)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert python.returncode == 0, python.stderr[-3000:]

    def shape(value: object) -> object:  # keys, nesting and JSON types, not values
        if isinstance(value, dict):
            return {key: shape(item) for key, item in value.items()}
        if isinstance(value, list):
            return [shape(item) for item in value]
        return "number" if isinstance(value, int | float) else type(value).__name__

    for node_line, python_line in zip(node.stdout.splitlines(), python.stdout.splitlines(), strict=True):
        ours, theirs = json.loads(node_line), json.loads(python_line)
        assert shape(ours) == shape(theirs) and list(ours) == ["file", "windows", "genre", "unknown", "unknown_score", "top", "probabilities"]
        assert (ours["file"], ours["windows"]) == (theirs["file"], theirs["windows"]) and ours["windows"] == 2
        assert [t["genre"] for t in ours["top"]] == [t["genre"] for t in theirs["top"]], ours["file"]
        for genre, probability in theirs["probabilities"].items():
            assert ours["probabilities"][genre] == pytest.approx(probability, abs=2e-3), (ours["file"], genre, ours["probabilities"][genre] - probability)

    helped = subprocess.run(["node", str(folder / "genretag_reference.mjs"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: node genretag_reference.mjs") and "--json" in helped.stdout
    assert "--help" not in helped.stderr and "error" not in helped.stderr
    unknown = subprocess.run(["node", str(folder / "genretag_reference.mjs"), "--bogus", str(files[0])],
                             capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert unknown.returncode == 2 and unknown.stderr.startswith("unknown option --bogus\nusage:")
