"""dvc.yaml's ``candidate-<id>`` stages, written from the family registry and params.yaml ``train.candidates``.

DVC's ``foreach`` cannot interpolate a list into ``deps`` (DVC 3.67: "expected a list"), and a
literal stage name may not hold ``@``; so each candidate gets its own stage ``candidate-<id>``
whose deps are the stage's common sources (:data:`COMMON_DEPS`: the flow and what it imports), the
family's module and the project modules it imports (found by reading their ``import`` statements,
the lazy ones too, without importing them), and whose params are :data:`COMMON_PARAMS`, the
family's ``dvc_params`` and its own section ``families.<name>`` when params.yaml has one. Editing or
adding one family therefore reruns only that family's candidates.

``python -m genretag.training.stages`` rewrites the block between :data:`BEGIN` and :data:`END` in
dvc.yaml; ``--check`` exits 1 when the block is out of date (run it after changing
``train.candidates``, ``train.family_modules`` or a family's imports).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from genretag.core.config import Params, load_params
from genretag.core.errors import ConfigError

BEGIN = "  # BEGIN candidate stages: written by `python -m genretag.training.stages` from the family registry; do not edit\n"
END = "  # END candidate stages\n"
SOURCE_ROOTS = ("src", ".")  # where a project module's file is looked up, in order (src layout, then flows/ and tests/)
COMMON_ENTRY = "flows/train.py"
DATA_DEPS = (
    "data/raw",
    "data/clips.csv",
    "data/tracks.csv",  # the drift reference's genre counts, source rates and durations
)
COMMON_PARAMS = (
    "genres",
    "audio.sample_rate",
    "audio.clip_seconds",
    "train.seed",
    "export",
    "register.model_name",
    "ingest.source",  # the model card says what the data were
    "split.method",
)


def module_file(module: str, *, root: Path) -> Path | None:
    """The project file of dotted ``module`` (``a/b.py`` or ``a/b/__init__.py`` under a :data:`SOURCE_ROOTS`
    folder of ``root``), or None for a module outside the project (numpy, keras, ...)."""
    parts = module.split(".")
    for base in SOURCE_ROOTS:
        folder = root / base
        for candidate in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def _imported(path: Path, *, root: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports (top level and inside functions), with their parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, path=path, root=root)
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    found = set()
    for name in names:
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]), root=root))
    return found


def _absolute(node: ast.ImportFrom, *, path: Path, root: Path) -> str:
    """The dotted module a ``from ... import`` in ``path`` names, relative imports (``from . import x``) made absolute
    against the package of ``path`` (under a :data:`SOURCE_ROOTS` folder of ``root``); "" when it leaves the project."""
    if not node.level:
        return node.module or ""
    resolved = path.resolve()
    for base in SOURCE_ROOTS:
        folder = (root / base).resolve()
        if resolved.is_relative_to(folder):
            package = list(resolved.relative_to(folder).parent.parts)
            break
    else:
        return ""
    if node.level - 1 > len(package):
        return ""
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def source_closure(paths: Iterable[Path], *, root: Path) -> list[str]:
    """``paths`` and every project file they import, transitively: sorted paths relative to ``root`` (POSIX).

    Raises SyntaxError naming a file Python cannot parse.
    """
    seen: set[Path] = set()
    todo = [Path(p).resolve() for p in paths]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name, root=root).resolve() for name in _imported(path, root=root))
    return sorted(path.relative_to(root.resolve()).as_posix() for path in seen)


def candidate_stage(candidate: str, *, params: Params, root: Path, sections: Iterable[str]) -> dict[str, object]:
    """The DVC stage of one candidate: ``cmd``, ``deps``, ``params``, ``outs`` (plain data, as dvc.yaml holds it).

    ``sections``: the family names params.yaml has a ``families.<name>`` section for (DVC refuses a missing key).
    Raises ConfigError for an unknown candidate or a family module outside the project.
    """
    from genretag.families import parse_candidate

    try:
        family, _ = parse_candidate(candidate, modules=params.train.family_modules)
    except ValueError as exc:
        raise ConfigError(f"train.candidates: {exc}") from None
    own = module_file(family.__module__, root=root)
    if own is None:
        raise ConfigError(f"{family.__module__}: family {family.name!r} is not a module of the project under {root}")
    deps = source_closure([root / COMMON_ENTRY, own], root=root)
    keys = [*COMMON_PARAMS, *family.dvc_params, *([f"families.{family.name}"] if family.name in sections else [])]
    return {"cmd": f"python -m flows.train --candidate {candidate}", "deps": [*deps, *DATA_DEPS],
            "params": keys, "outs": [f"models/candidates/{candidate}"]}


def render_block(params: Params, *, root: Path, sections: Iterable[str]) -> str:
    """The text between (and including) :data:`BEGIN` and :data:`END`: one stage per ``train.candidates`` id."""
    import yaml

    sections = set(sections)
    stages = {f"candidate-{c}": candidate_stage(c, params=params, root=root, sections=sections) for c in params.train.candidates}
    body = yaml.safe_dump(stages, sort_keys=False, default_flow_style=False, width=200)
    return BEGIN + "".join(f"  {line}\n" for line in body.splitlines()) + END


def updated_dvc_yaml(text: str, block: str, *, path: Path) -> str:
    """``text`` (dvc.yaml) with its candidate block replaced by ``block``. Raises ConfigError naming ``path``
    when the :data:`BEGIN`/:data:`END` markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{path}: no candidate block (the lines {BEGIN.strip()!r} ... {END.strip()!r} under stages:)")
    return text[:start] + block + text[end + len(END):]


def family_sections(params_path: Path) -> list[str]:
    """The family names params.yaml itself has a ``families`` section for (not the defaults)."""
    import yaml

    raw = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    return list((raw.get("families") or {}).keys())


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or, with ``--check``, compare) the candidate stages of ``<root>/dvc.yaml``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root holding dvc.yaml and params.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's candidate stages are out of date")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # train.family_modules such as tests.toy_family
    params = load_params(root / "params.yaml")
    dvc_yaml = root / "dvc.yaml"
    text = dvc_yaml.read_text(encoding="utf-8")
    new = updated_dvc_yaml(text, render_block(params, root=root, sections=family_sections(root / "params.yaml")), path=dvc_yaml)
    if args.check:
        if new != text:
            print(f"{dvc_yaml}: candidate stages out of date; run python -m genretag.training.stages", file=sys.stderr)
            return 1
        return 0
    if new != text:
        from genretag.core.atomic import atomic_path

        with atomic_path(dvc_yaml) as tmp:
            tmp.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
