"""A step engine: an ordered list of steps (:class:`Step`), where a :class:`ForEach` runs its own steps
for each of its parts (nested ForEachs too), walked in order by :func:`walk_steps`, which calls each step
its caller's way: directly (:func:`call_directly`) or, in a Prefect flow, as a task.
genretag.tagging.run.TAGGING_STEPS is the tagging run's list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One step: ``do(run)``, or ``do(run, part)`` inside a :class:`ForEach`."""

    name: str  # the Prefect task's name
    do: Callable[..., None]
    retry: bool = False  # reads or writes files or the database, idempotently: the flow retries it
    lenient: Callable[..., None] | None = None  # the last try, after the retries: records per item what still fails


@dataclass(frozen=True)
class ForEach:
    """Steps run for each part in turn: every step on the first part, then on the next. A ForEach among
    the steps runs whole, on its own parts, for each part of this one."""

    parts: Callable[[Any], Iterable[Any]]  # drawn lazily, one part at a time
    steps: tuple[Step | ForEach, ...]


def flat_steps(entries: Iterable[Step | ForEach]) -> Iterator[Step]:
    """Every Step of ``entries`` in order, those of each ForEach (nested ones too) once."""
    for entry in entries:
        yield from flat_steps(entry.steps) if isinstance(entry, ForEach) else (entry,)


StepCall = Callable[..., None]
"""How a walker runs one step: ``call(step, run)`` or ``call(step, run, part)``."""


def call_directly(step: Step, run: Any, *part: Any) -> None:
    """A step's only try, in this process: the lenient form where it has one (no retry will follow)."""
    (step.lenient or step.do)(run, *part)


def walk_steps(entries: Iterable[Step | ForEach], run: Any, call: StepCall, *part: Any) -> None:
    """Each of ``entries`` in order: a Step by ``call(step, run, *part)`` (``part``: the innermost
    ForEach's, none at the top), a ForEach's entries for each of its parts."""
    for entry in entries:
        if isinstance(entry, Step):
            call(entry, run, *part)
            continue
        for inner in entry.parts(run):
            walk_steps(entry.steps, run, call, inner)

