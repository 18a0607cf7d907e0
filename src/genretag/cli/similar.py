"""`genretag similar`: the nearest catalog tracks of a track by the serving model's track embeddings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from genretag.cli.app import MODEL_HELP, app, existing_catalog, exit_with
from genretag.core.config import layout, load_params


@app.command()
def similar(
    track: str = typer.Argument(..., help="An audio file, or the SHA-256 (8+ hex digits) of a track in the catalog."),
    k: int = typer.Option(10, "--k", min=1, help="How many neighbours."),
    genre: str = typer.Option(None, "--genre", help="Only neighbours tagged with this genre."),
    model_version: str = typer.Option(None, "--model-version", help="Search this model version's embeddings (default: the serving model's, score.model)."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP + " Scores a file the catalog does not hold."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as one JSON object."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
) -> None:
    """List the catalog tracks nearest to TRACK (cosine distance of one model version's track embeddings), with their tags.

    A file the catalog does not hold is scored here with the model (--model, else score.model), or the
    command says how to tag it first. Only one model version's embeddings are searched, never a mix.
    """
    from genretag.audio.decoding import file_sha256
    from genretag.core.errors import GenretagError, ScoringError
    from genretag.onnx.contract import read_contract
    from genretag.onnx.session import open_model
    from genretag.registry.fetch import resolve_project_model
    from genretag.similarity.index import index_folder
    from genretag.similarity.search import embed_file, query_embedding, similar as search
    from genretag.tagging.database import catalog_url
    from genretag.tagging.store import Catalog

    try:
        params, root = load_params(), layout().root
        is_file = Path(track).is_file()
        sha = file_sha256(Path(track)) if is_file else track
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha):
            raise ScoringError(f"{track}: no such file, and not a SHA-256 (8 to 64 hex digits)")
        url = existing_catalog(catalog_url(params, root=root, override=database))

        def serving_model() -> Path:
            try:
                return resolve_project_model(model, params=params, root=root)
            except GenretagError as exc:
                if is_file and not held:
                    raise ScoringError(f"{track}: not in the catalog{' as ' + model_version + ' tagged it' if model_version else ''}, "
                                       f"and no model to score it here ({exc}); tag it first with `genretag tag-catalog FOLDER`, "
                                       "or pass --model PATH.onnx") from exc
                raise ScoringError(f"cannot tell the serving model's version ({exc}); pass --model-version V") from exc

        with Catalog(url) as catalog:
            held = bool(catalog.find(sha)[0])  # some model version tagged this content
            version = model_version or read_contract(serving_model()).model_version
            folder = index_folder(url, index_dir=params.similar.index_dir, root=root)
            options = {"model_version": version, "k": k, "genre": genre, "exact_below": params.similar.exact_below, "index_folder": folder}
            if query_embedding(catalog, sha256=sha, model_version=version) is not None:
                answer = search(catalog, sha256=sha, **options)
            elif not is_file:
                raise ScoringError(f"sha256 {sha}: not tagged by model version {version} in the catalog "
                                   f"(genretag show {sha} lists what the catalog holds)")
            else:
                scoring_model = open_model(serving_model())
                if scoring_model.model_version != version:
                    raise ScoringError(f"{track}: not in the catalog as {version} tagged it, and the model to score it is "
                                       f"{scoring_model.model_version}: pass --model with a file of version {version}")
                vector = embed_file(scoring_model, track, max_windows=params.score.max_windows,
                                    silence_rms_dbfs=params.validation.silence_rms_dbfs)
                answer = search(catalog, embedding=vector, **options)
    except GenretagError as exc:
        exit_with(exc, code=1)
    if as_json:
        typer.echo(json.dumps(answer.as_dict()))
        return
    typer.echo(f"{len(answer.neighbours)} nearest of {track} among {answer.searched} tracks of model version "
               f"{answer.model_version} ({answer.method} search, cosine distance):", err=True)
    for n in answer.neighbours:
        top = "  ".join(f"{t['genre']} {t['probability']:.2f}" for t in n.top3)
        typer.echo(f"{n.distance:.4f}  {n.genre:<10} {n.confidence:.2f}  {n.path}  ({top}; sha256 {n.sha256[:12]})")
