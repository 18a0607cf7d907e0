"""The built images, run with podman: `make image-test` (tagger) and `make image-test-pipeline`.

Each test runs only when its image was built and named in the environment (the make targets do
both): GENRETAG_TAGGER_IMAGE, GENRETAG_PIPELINE_IMAGE. The containers run with no network, as the
image's own non-root user, on files the tests make here and mount. They use the public CLI only:
`genretag predict --model PATH FILE...`, `genretag tag-catalog DIR --model PATH --database URL`,
`python -m flows.server dvc repro`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import sqlalchemy as sa
import yaml
from onnx import TensorProto, helper, numpy_helper
from packaging.utils import canonicalize_name

from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, write_contract
from tests.conftest import REPO_ROOT, tone, write_audio
from tests.pipeline.conftest import TINY_CANDIDATES, stages_run
from tests.pipeline.test_dockerfile import lock_pins

IMAGE_USER = "10001"  # the Dockerfile's `genretag` user
LABELS = ("blues", "classical", "metal")
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 3 * SAMPLE_RATE
EMBEDDING_SIZE = 4

pytestmark = pytest.mark.image


def built_image(variable: str) -> str:
    name = os.environ.get(variable)
    if not name:
        pytest.skip(f"{variable} is not set: `make image-test` / `make image-test-pipeline` build the image and set it")
    return name


@pytest.fixture(scope="module")
def tagger() -> str:
    return built_image("GENRETAG_TAGGER_IMAGE")


@pytest.fixture(scope="module")
def pipeline() -> str:
    return built_image("GENRETAG_PIPELINE_IMAGE")


def podman(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO_ROOT / "docker" / "containers.conf"))}
    return subprocess.run(["podman", *args], env=env, text=True, capture_output=True, timeout=timeout)


def run_in(image_name: str, *command: str, volume: Path | None = None, mount: str = "/data", timeout: float = 900) -> subprocess.CompletedProcess:
    """``command`` in a throwaway container of ``image_name``: no network, ``volume`` mounted read-write at ``mount``."""
    options = ["--rm", "--network", "none", "--env", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300"]
    if volume is not None:
        options += ["--volume", f"{volume}:{mount}"]
    return podman("run", *options, image_name, *command, timeout=timeout)


def shared_with_the_image(folder: Path) -> Path:
    """Give ``folder`` (and everything in it) to the image's user, so the container may write there."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, int(IMAGE_USER), int(IMAGE_USER), follow_symlinks=False)
    return folder


def tiny_v2_model(path: Path) -> Path:
    """A contract-v2 ONNX: waveform [N, 48,000] (3 s at 16 kHz) -> embedding [N, 4] -> probabilities [N, 3].

    Fixed random weights; what it answers does not matter, only that every consumer can feed it.
    """
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.standard_normal((CLIP_SAMPLES, EMBEDDING_SIZE)) * 1e-2).astype(np.float32), "w")
    head = numpy_helper.from_array(rng.standard_normal((EMBEDDING_SIZE, len(LABELS))).astype(np.float32), "head")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT_NAME, "w"], [EMBEDDING_NAME]),
            helper.make_node("MatMul", [EMBEDDING_NAME, "head"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
        ],
        "image_test",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", CLIP_SAMPLES])],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(LABELS)]),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", EMBEDDING_SIZE]),
        ],
        initializer=[weights, head],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    contract = ModelContract(
        labels=LABELS, model_name="image-test", model_version="1", sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES,
        family="image-test", preprocessing={"graph": "waveform MatMul, no DSP"},
    )
    onnx.checker.check_model(model)
    onnx.save(write_contract(model, contract), str(path))
    return path


def write_m4a(path: Path, samples: np.ndarray, *, sample_rate: int) -> Path:
    """AAC in an MP4 container (what iTunes calls .m4a), encoded with PyAV."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def tagger_data(tagger, tmp_path_factory) -> Path:
    """/data for the tagger: model.onnx, catalog/{tone.wav (44.1 kHz stereo), tone.m4a (AAC, 22,050 Hz)}."""
    data = tmp_path_factory.mktemp("tagger-data")
    tiny_v2_model(data / "model.onnx")
    stereo = np.stack([tone(7.0, sample_rate=44_100, frequency=330.0), tone(7.0, sample_rate=44_100, frequency=440.0, seed=1)], axis=1)
    write_audio(data / "catalog" / "tone.wav", stereo, sample_rate=44_100)
    write_m4a(data / "catalog" / "tone.m4a", tone(7.0, sample_rate=22_050, frequency=550.0, seed=2), sample_rate=22_050)
    return shared_with_the_image(data)


def test_tagger_runs_as_its_non_root_user_without_tensorflow(tagger):
    user = run_in(tagger, "id", "-u")
    assert user.returncode == 0 and user.stdout.strip() == IMAGE_USER, user.stdout + user.stderr
    tensorflow = run_in(tagger, "python", "-c", "import tensorflow")
    assert tensorflow.returncode != 0 and "No module named 'tensorflow'" in tensorflow.stderr, tensorflow.stderr


def test_tagger_holds_exactly_the_tagger_locks_versions(tagger):
    probe = "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    result = run_in(tagger, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    installed = {canonicalize_name(name): version for name, version in json.loads(result.stdout).items()}
    assert installed.pop("genretag")
    assert installed == lock_pins((REPO_ROOT / "docker" / "requirements-tagger.lock").read_text())


def test_predict_decodes_wav_and_m4a_inside_the_tagger(tagger, tagger_data):
    result = run_in(tagger, "genretag", "predict", "--model", "/data/model.onnx", "/data/catalog/tone.wav",
                    "/data/catalog/tone.m4a", volume=tagger_data)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    for name in ("tone.wav", "tone.m4a"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"/data/catalog/{name}"))
        assert sum(label in line.split() for label in LABELS) == 3, line  # the top 3 of the model's 3 labels
        windows = re.search(r"\((\d+) windows", line)
        assert windows and int(windows.group(1)) >= 1, line  # 7 s of audio decoded in the image: whole 3-s windows


def test_tag_catalog_writes_to_a_mounted_sqlite_and_a_rerun_adds_nothing(tagger, tagger_data):
    command = ["genretag", "tag-catalog", "/data/catalog", "--model", "/data/model.onnx", "--database", "sqlite:////data/catalog.db"]
    counts = []
    for _ in range(2):
        result = run_in(tagger, *command, volume=tagger_data)
        assert result.returncode == 0, result.stdout + result.stderr[-4000:]
        engine = sa.create_engine(f"sqlite:///{tagger_data / 'catalog.db'}")
        try:
            with engine.connect() as connection:
                counts.append(connection.execute(sa.text("SELECT count(*) FROM catalog_tags")).scalar())
        finally:
            engine.dispose()
    assert counts == [2, 2], counts


def test_pipeline_image_runs_dvc_repro_on_the_tiny_demo(pipeline, make_project):
    root = shared_with_the_image(make_project("image-pipeline"))
    result = run_in(pipeline, "python", "-m", "flows.server", "dvc", "repro", volume=root, mount="/workspace", timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    declared = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]  # a foreach stage runs once per candidate
    stages = {f"{name}@{item}" if "foreach" in stage else name
              for name, stage in declared.items() for item in (TINY_CANDIDATES if "foreach" in stage else [None])}
    assert stages_run(result.stdout) == stages, result.stdout[-4000:]
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == stages  # written by the image's user
    user = run_in(pipeline, "id", "-u")
    assert user.stdout.strip() == IMAGE_USER
