"""From a model reference to a local model: the one resolver, downloads, handoff bundles.

A reference is a path to an .onnx file, or a registry reference: ``champion`` | ``challenger`` | a
version number | ``models:/NAME@ALIAS`` | ``models:/NAME/VERSION``. :func:`resolve_model` is the
only place that turns one into a local file (tagging, ``predict``, ``shadow``, the tag-catalog flow).

With a SQLite store whose artifacts are local files (the project's default), the version is read with
sqlite3 (:func:`genretag.registry.listing.read_sqlite_version`) and its folder is read in place, without
importing MLflow (several seconds here: issue 22 asks ``predict`` with the champion for <= 5 s); any other
store (a tracking server, remote artifacts) goes through MLflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from genretag.core.config import Params, RegisterParams
from genretag.core.errors import ConfigError, RegistryError, ScoringError
from genretag.core.tracking import point_mlflow, tracking_uri
from genretag.registry.client import TAG_ONNX_SHA, missing_store, open_client, resolve_version
from genretag.registry.listing import read_sqlite_version

log = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
CACHE_ENV = "GENRETAG_MODEL_CACHE"


def resolve_model(model: str, *, tracking_uri: str | None = None, model_name: str | None = None) -> Path:
    """``model`` (a path or a registry reference, see the module) -> a local .onnx file.

    ``tracking_uri``: the registry's store (None: MLflow's current one); ``model_name``: the registered
    model of a reference that does not name one (None: ``register.model_name``'s default). Raises
    ScoringError for a missing .onnx path, RegistryError for a reference the registry cannot serve.
    """
    candidate = Path(model).expanduser()
    if candidate.suffix == ".onnx" or candidate.is_file():
        if not candidate.is_file():
            raise ScoringError(f"{candidate}: no such ONNX file")
        return candidate.resolve()
    name, ref = _registry_reference(model, model_name=model_name)
    return fetch_onnx(ref, tracking_uri=tracking_uri, model_name=name)


def resolve_project_model(model: str | None, *, params: Params, root: Path) -> Path:
    """``--model`` (else ``score.model``) of the project at ``root`` -> a local .onnx file (:func:`resolve_model`).

    A registry reference needs a registry: $MLFLOW_TRACKING_URI, or the project's SQLite store.
    Without one this raises a one-line ConfigError instead of creating an empty store here.
    """
    ref = model or params.score.model
    uri = tracking_uri(params, root=root)
    if Path(ref).suffix != ".onnx" and not Path(ref).is_file() and (store := missing_store(uri)):
        given = f"--model {model}" if model else f"no --model given (score.model is {ref!r})"
        name, _ = _registry_reference(ref, model_name=params.registry.model_name)
        raise ConfigError(
            f"{given}: no model registry at {store}; pass --model PATH.onnx, or set MLFLOW_TRACKING_URI "
            f"for a registry reference such as {REGISTRY_SCHEME}{name}@champion"
        )
    return resolve_model(ref, tracking_uri=uri, model_name=params.registry.model_name)


def _registry_reference(ref: str, *, model_name: str | None) -> tuple[str, str]:
    """(registered model name, alias or version) of ``ref``; a bare alias or number is of ``model_name``."""
    if ref.startswith(REGISTRY_SCHEME):
        rest = ref[len(REGISTRY_SCHEME):]
        name, _, version = rest.partition("@") if "@" in rest else rest.partition("/")
        return name, version
    return model_name or RegisterParams().model_name, ref


def download_onnx(name: str, *, version: str, into: Path) -> Path:
    """Download version ``version``'s model folder into ``into``; returns the folder.

    Raises RegistryError when it cannot be downloaded or holds no model.onnx.
    """
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(into))
    except Exception as exc:  # noqa: BLE001 - artifact stores raise many types
        raise RegistryError(f"models:/{name}/{version}: cannot download the model ({exc})") from exc
    folder = Path(local)
    if not (folder / "model.onnx").is_file():
        raise RegistryError(f"models:/{name}/{version}: holds no model.onnx")
    return folder


def local_folder(location: str) -> Path | None:
    """The local folder of a version's download location (``file://`` URI or a plain path), or None
    for anything else (``s3://``, ``models:/``, ``http``: MLflow downloads those)."""
    parsed = urlparse(location)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location:
        return Path(location)
    return None


def _stored_folder(uri: str, *, name: str, ref: str) -> tuple[str, Path, str | None] | None:
    """(version, local model folder, the version's ONNX SHA-256 tag) read without MLflow, or None when
    the store is not SQLite or the folder is not a local one holding model.onnx. Raises RegistryError as
    :func:`~genretag.registry.listing.read_sqlite_version`."""
    stored = read_sqlite_version(uri, name=name, ref=ref)
    folder = local_folder(stored.location) if stored is not None else None
    if stored is None or folder is None or not (folder / "model.onnx").is_file():
        return None
    return stored.version, folder, stored.tags.get(TAG_ONNX_SHA)


def fetch_onnx(ref: str, *, tracking_uri: str | None = None, model_name: str | None = None) -> Path:
    """A local copy of version/alias ``ref``'s model.onnx.

    Registry versions never change, so each is downloaded once into a cache folder
    ($GENRETAG_MODEL_CACHE, else ``<tmp>/genretag-models``) keyed by tracking URI, model name
    and version; a cached file whose SHA-256 differs from the version's tag is fetched again.
    A SQLite ``tracking_uri`` with local artifacts is read without MLflow (see the module).
    Raises RegistryError for a version or alias the registry does not hold, or cannot download.
    """
    import hashlib

    from genretag.audio.decoding import file_sha256
    from genretag.core.atomic import atomic_path

    name = model_name or RegisterParams().model_name
    local = _stored_folder(tracking_uri, name=name, ref=ref) if tracking_uri else None
    if local is not None:
        uri, (number, folder, wanted) = tracking_uri, local
    else:
        import mlflow
        from mlflow import MlflowClient

        if tracking_uri:
            point_mlflow(tracking_uri)
        uri = mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = resolve_version(client, name=name, ref=ref)
        number, folder, wanted = str(version.version), None, version.tags.get(TAG_ONNX_SHA)
    cache_root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "genretag-models")
    target = cache_root / hashlib.sha256(uri.encode()).hexdigest()[:12] / name / number / "model.onnx"
    if target.is_file() and (not wanted or file_sha256(target) == wanted):
        return target
    with tempfile.TemporaryDirectory(prefix="genretag-fetch-") as tmp:
        source = folder if folder is not None else download_onnx(name, version=number, into=Path(tmp))
        with atomic_path(target) as partial:
            shutil.copyfile(source / "model.onnx", partial)
    log.info("fetched %s v%s (%s) to %s", name, number, ref, target)
    return target


def fetch(params: Params, *, root: Path, ref: str, out: Path) -> Path:
    """Write the handoff bundle of ``ref`` (champion, challenger or a version number) into ``out``; returns ``out``.

    Read without MLflow from a SQLite store with local artifacts (see the module), else downloaded through MLflow.
    Raises RegistryError for a version or alias the registry does not hold or cannot download.
    """
    from genretag.handoff import MODEL_CARD_NAME, write_bundle

    name = params.registry.model_name
    local = _stored_folder(tracking_uri(params, root=root), name=name, ref=ref)
    with tempfile.TemporaryDirectory(prefix="genretag-fetch-") as tmp:
        if local is not None:
            number, folder, _ = local
        else:
            version = resolve_version(open_client(params, root=root), name=name, ref=ref)
            number = str(version.version)
            folder = download_onnx(name, version=number, into=Path(tmp))
        stored = folder / "extra_files"
        card = stored / MODEL_CARD_NAME
        write_bundle(
            folder / "model.onnx",
            out,
            max_windows=params.score.max_windows,
            silence_rms_dbfs=params.validation.silence_rms_dbfs,
            client_dir=stored,
            model_card=card if card.is_file() else None,
            registry_version=number,
        )
    return out
