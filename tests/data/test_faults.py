"""Faults outside the audio end in one `error:` line naming the resource (password redacted) and a
non-zero exit; the traceback only with --debug. Each case is made here, run through the real CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genretag.core.errors import CatalogError
from genretag.tagging.store import Catalog

from tests.conftest import REPO_ROOT, tone, write_audio


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot create files in (root ignores permission bits: use /proc)."""
    if os.geteuid() == 0:
        return Path("/proc/1")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GENRETAG_ROOT=str(root), PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
    env.pop("GENRETAG_CATALOG_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "genretag.cli", *args], capture_output=True, text=True, env=env, timeout=300, cwd=root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "music").mkdir(parents=True)
    (project / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    write_audio(project / "music" / "a.wav", tone(4))
    return project


def _one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("url", "fragments"), [
    ("mysql://bob:s3cret@localhost/cat", ("catalog database mysql://bob:***@localhost/cat", "no driver")),
    ("postgresql+psycopg://bob:s3cret@127.0.0.1:1/cat", ("catalog database postgresql+psycopg://bob:***@127.0.0.1:1/cat", "refused")),
], ids=["mysql-without-driver", "unreachable-postgresql"])
def test_a_bad_catalog_url_fails_before_the_model_is_loaded(root: Path, url: str, fragments: tuple[str, ...]) -> None:
    # The model path does not exist: an error about it would mean the model was loaded first.
    result = _cli(root, "tag-catalog", "music", "--database", url, "--model", str(root / "missing.onnx"))
    _one_error_line(result, *fragments)


def test_a_text_file_as_catalog_database(root: Path) -> None:
    (root / "catalog.db").write_text("these are my notes\n" * 50)
    result = _cli(root, "tag-catalog", "music", "--database", f"sqlite:///{root / 'catalog.db'}", "--model", str(root / "missing.onnx"))
    _one_error_line(result, f"file {root / 'catalog.db'}", "file is not a database")


def test_sqlite_in_a_folder_that_cannot_be_written(root: Path, tmp_path: Path) -> None:
    target = _unwritable_folder(tmp_path) / "catalog.db"
    result = _cli(root, "tag-catalog", "music", "--database", f"sqlite:///{target}", "--model", str(root / "missing.onnx"))
    _one_error_line(result, f"(file {target})", "cannot create it, folder", "is not writable")


def test_export_tags_into_a_folder_that_cannot_be_written(root: Path, tmp_path: Path) -> None:
    out = _unwritable_folder(tmp_path) / "tags.csv"
    Catalog(f"sqlite:///{root / 'catalog.db'}").close()  # an existing, empty catalog: only the output folder is at fault
    result = _cli(root, "export-tags", "--out", str(out), "--database", f"sqlite:///{root / 'catalog.db'}")
    _one_error_line(result, f"cannot write {out}: ")


def test_debug_shows_the_traceback(root: Path) -> None:
    result = _cli(root, "--debug", "tag-catalog", "music", "--database", "mysql://bob:s3cret@localhost/cat")
    assert result.returncode != 0 and "Traceback" in result.stderr


def _corrupt(path: Path, kind: str) -> None:
    if kind == "random-bytes":
        path.write_bytes(os.urandom(50_000))
        return
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE registered_models (name TEXT, description TEXT)")
    connection.executemany("INSERT INTO registered_models VALUES (?, ?)", [(f"m{i}", "x" * 300) for i in range(3000)])
    connection.commit()
    connection.close()
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)


@pytest.mark.parametrize("kind", ["random-bytes", "truncated"])
@pytest.mark.parametrize("command", [("registry", "list"), ("predict", "music/a.wav")], ids=["registry-list", "predict"])
def test_a_corrupt_registry_database_is_named(root: Path, kind: str, command: tuple[str, ...]) -> None:
    _corrupt(root / "mlflow.db", kind)
    result = _cli(root, *command)
    assert result.returncode != 0
    assert f"registry database {root / 'mlflow.db'} is corrupt: " in result.stderr
    assert "Traceback" not in result.stderr


# --- issue 23: a typo creates nothing, and is one line ------------------------------------------------


def test_a_catalog_in_a_folder_that_does_not_exist_is_not_created(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent_dir" / "sub" / "catalog.db"
    result = _cli(root, "tag-catalog", "music", "--database", f"sqlite:///{target}", "--model", str(root / "missing.onnx"))
    _one_error_line(result, f"(file {target}): folder {target.parent} does not exist", "--create-catalog")
    assert not (tmp_path / "nonexistent_dir").exists()
    with pytest.raises(CatalogError, match="does not exist"):
        Catalog(f"sqlite:///{target}")
    assert not (tmp_path / "nonexistent_dir").exists()
    Catalog(f"sqlite:///{target}", create_folder=True).close()  # what --create-catalog asks for
    assert target.is_file()


def test_a_missing_source_creates_no_catalog(root: Path) -> None:
    result = _cli(root, "tag-catalog", "no-such-folder", "--database", f"sqlite:///{root / 'new.db'}", "--model", str(root / "missing.onnx"))
    _one_error_line(result, f"{root / 'no-such-folder'}: no such folder, CSV or audio file")
    assert not (root / "new.db").exists()


def test_a_missing_ingest_source_is_one_line_before_prefect(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["source"] = "no-such-corpus"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = _cli(root, "ingest")
    _one_error_line(result, "ingest.source = 'no-such-corpus': no such folder")
    assert len(result.stderr.splitlines()) == 1 and not (root / "data").exists()


def test_an_image_too_small_for_the_family_is_refused_before_any_run(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["spectrogram"]["image_size"] = [8, 8]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = _cli(root, "train", "paper-exp8")
    _one_error_line(result, "spectrogram.image_size = [8, 8]: paper-exp8 needs at least [64, 64]")
    assert len(result.stderr.splitlines()) == 1 and not (root / "mlflow.db").exists() and not (root / "mlruns").exists()
