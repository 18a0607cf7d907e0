"""What every flow shares: retry policy, fault injection, parameters and layout."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from genretag.core.config import Layout, Params, layout, load_params
from genretag.core.errors import GenretagError
from genretag.core.processes import watch_prefect_ephemeral_server

FAULTS_ENV = "GENRETAG_FAULTS"


class TransientFault(OSError):
    """An injected failure that a retry is expected to clear."""


class PermanentFault(GenretagError):
    """An injected failure that no retry can clear."""


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry I/O hiccups; a GenretagError (bad file, bad config) fails at once."""
    try:
        state.result()
    except (GenretagError, UnicodeError):  # bad input or config: the same again on every try
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


# Keyword arguments for @task on anything that reads or writes files.
IO_RETRIES: dict = {"retries": 3, "retry_delay_seconds": [0.5, 1, 2], "retry_condition_fn": retry_if_transient}

_fault_counts: Counter[str] = Counter()


def maybe_inject_fault(point: str, *, subject: str | Path = "") -> None:
    """Fail at ``point`` when $GENRETAG_FAULTS asks for it (tests and drills only).

    ``GENRETAG_FAULTS="ingest.decode=2,train.candidate=permanent"``: the first two calls at
    ``ingest.decode`` in this process raise TransientFault; every call at ``train.candidate``
    raises PermanentFault.
    """
    wanted = dict(
        item.split("=", 1) for item in os.environ.get(FAULTS_ENV, "").split(",") if "=" in item
    )
    if point not in wanted:
        return
    where = f"{point} {subject}".strip()
    if wanted[point] == "permanent":
        raise PermanentFault(f"{where}: injected permanent fault")
    _fault_counts[point] += 1
    if _fault_counts[point] <= int(wanted[point]):
        raise TransientFault(f"{where}: injected transient fault {_fault_counts[point]} of {wanted[point]}")


def stage_context() -> tuple[Params, Layout]:
    """The parameters (``--params``/$GENRETAG_PARAMS, else the project's params.yaml, else the
    built-in defaults) and the file layout of the project the stage runs in."""
    watch_prefect_ephemeral_server()  # a SIGKILLed stage must not leave its temporary server running
    return load_params(), layout()
