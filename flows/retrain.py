"""Deployment `retrain`: pull, ingest new audio, `dvc repro` (stale stages only), push — one at a time.

Steps, in one workspace (a git + DVC checkout of this repository):

1. take the workspace's retrain lock (``.dvc/tmp/genretag-retrain.lock``, ``fcntl.flock``,
   non-blocking): when another retrain holds it, this run is skipped with a message;
2. ``dvc pull`` from the default remote when one is configured and reachable (else logged, skipped);
3. ``dvc repro --force --single-item ingest``: the ingest stage depends on code and params
   only, so new audio in the source folder would not make it stale; forcing it ingests what
   arrived (incrementally: unchanged files are not decoded again, and when nothing arrived
   data/raw keeps its hash and nothing downstream reruns);
4. ``dvc repro``: reruns only the stale stages; the register stage applies the champion gate;
5. ``dvc push`` to the default remote.

DVC's own repository lock (another ``dvc`` command in the workspace, e.g. a person's manual
``dvc repro``) is waited for, up to ``lock_wait_s``; then the run is skipped with a message.
A skipped run ends in a Completed state named ``Skipped`` whose message says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from genretag.core.config import project_root

LOCK_NAME = "genretag-retrain.lock"
DVC_LOCK_MESSAGE = "Unable to acquire lock"  # dvc.lock.FAILED_TO_LOCK_MESSAGE
_PLAIN: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
_SCHEMES = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class RetrainBusy(RuntimeError):
    """Another retrain, or another DVC command, holds the workspace: this run is skipped."""


class DvcFailed(RuntimeError):
    """A dvc command failed for a reason other than DVC's lock."""


# ------------------------------------------------------------------------------------------ locks


def lock_path(workspace: Path) -> Path:
    return workspace / ".dvc" / "tmp" / LOCK_NAME


@contextlib.contextmanager
def retrain_lock(workspace: Path) -> Iterator[Path]:
    """Hold the workspace's retrain lock; raise RetrainBusy at once when another process holds it.

    ``flock`` locks die with their process: a crashed retrain never leaves a stale lock behind.
    The file itself stays (it records the last holder); only the lock on it matters.
    """
    path = lock_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RetrainBusy(
                f"another retrain is running in {workspace} ({holder}; lock {path}): skipping this run"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------- dvc


def dvc_executable() -> str:
    """The dvc next to this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else "dvc"


def child_env(workspace: Path) -> dict[str, str]:
    """Environment of the dvc commands and the stages they run.

    The venv's bin first on PATH (dvc.yaml says ``python -m flows.<stage>``), the workspace as
    GENRETAG_ROOT, and none of the runner's per-run variables (``PREFECT__FLOW_RUN_ID`` ...):
    each stage is its own flow run on the same Prefect API.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GENRETAG_ROOT"] = str(workspace)
    return env


def run_dvc(workspace: Path, *args: str, lock_wait_s: float = 600.0, echo: bool = True) -> str:
    """Run ``dvc <args>`` in ``workspace``; return its output.

    While DVC's repository lock is held by another process, retry for up to ``lock_wait_s``
    seconds, then raise RetrainBusy. Any other failure raises DvcFailed with the output's tail.
    """
    logger = get_run_logger()
    command = [dvc_executable(), *args]
    deadline = time.monotonic() + lock_wait_s
    while True:
        lines: list[str] = []
        tail: deque[str] = deque(maxlen=60)
        with subprocess.Popen(
            command, cwd=workspace, env=child_env(workspace), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                tail.append(line)
                if echo:
                    sys.stdout.write(line)
                if line.startswith("Running stage"):
                    logger.info("dvc: %s", line.strip())
            returncode = process.wait()
        output = "".join(lines)
        if returncode == 0:
            return output
        if DVC_LOCK_MESSAGE in output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RetrainBusy(
                    f"DVC's lock in {workspace} is held by another dvc process (waited {lock_wait_s:g} s for "
                    f"`dvc {' '.join(args)}`): skipping this run"
                )
            logger.info("DVC's lock in %s is held by another dvc process; waiting (%.0f s left)", workspace, left)
            time.sleep(min(5.0, max(left, 0.1)))
            continue
        raise DvcFailed(f"`dvc {' '.join(args)}` in {workspace} failed (exit {returncode}):\n{''.join(tail)}")


def default_remote(workspace: Path) -> tuple[str | None, str | None]:
    """(name, url) of the workspace's default DVC remote (all config levels merged), or (None, None)."""
    from dvc.config import Config

    config = Config(dvc_dir=str(workspace / ".dvc"))  # repo, local, global and system levels
    name = config["core"].get("remote")
    if not name:
        return None, None
    remote = config["remote"].get(name)
    return name, (str(remote["url"]) if remote else None)


def remote_problem(url: str) -> str:
    """Why a local remote cannot be pulled from ('' when it can); cloud remotes are tried."""
    if _SCHEMES.match(url) and not url.lower().startswith("file://"):
        return ""
    path = Path(url.removeprefix("file://"))
    if not path.is_dir():
        return f"remote storage {path} does not exist (nothing pushed yet, or not mounted)"
    return ""


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


# ----------------------------------------------------------------------------------------- tasks


@task(name="dvc-pull", **_PLAIN)
def pull(workspace: Path, lock_wait_s: float) -> str:
    """Pull from the default remote when configured and reachable; return what happened."""
    logger = get_run_logger()
    name, url = default_remote(workspace)
    if not name or not url:
        logger.info("no default DVC remote configured in %s: skipping dvc pull", workspace)
        return "skipped: no default remote"
    if problem := remote_problem(url):
        logger.warning("DVC remote %r (%s) is not reachable: %s; skipping dvc pull", name, url, problem)
        return f"skipped: {problem}"
    try:
        run_dvc(workspace, "pull", lock_wait_s=lock_wait_s)
    except DvcFailed as exc:
        # Unreachable cloud storage or objects missing there: the repro below rebuilds locally.
        logger.warning("dvc pull from %r (%s) failed; going on with the workspace as it is: %s", name, url, exc)
        return f"failed: {str(exc).splitlines()[0]}"
    logger.info("pulled from DVC remote %r (%s)", name, url)
    return f"pulled from {name}"


@task(name="ingest-new-audio", **_PLAIN)
def ingest_new_audio(workspace: Path, lock_wait_s: float) -> list[str]:
    return stages_run(run_dvc(workspace, "repro", "--force", "--single-item", "ingest", lock_wait_s=lock_wait_s))


@task(name="dvc-repro", **_PLAIN)
def repro(workspace: Path, lock_wait_s: float) -> list[str]:
    return stages_run(run_dvc(workspace, "repro", lock_wait_s=lock_wait_s))


@task(name="dvc-push", retries=2, retry_delay_seconds=[10, 30], **_PLAIN)
def push(workspace: Path, lock_wait_s: float) -> str:
    logger = get_run_logger()
    name, url = default_remote(workspace)
    if not name or not url:
        logger.info("no default DVC remote configured in %s: skipping dvc push", workspace)
        return "skipped: no default remote"
    run_dvc(workspace, "push", lock_wait_s=lock_wait_s)
    logger.info("pushed to DVC remote %r (%s)", name, url)
    return f"pushed to {name}"


def _registry_decision(workspace: Path) -> dict:
    path = workspace / "models" / "registry.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------ flow


@flow(name="retrain")
def retrain_flow(
    workspace: str | None = None,
    pull_first: bool = True,
    ingest: bool = True,
    push_after: bool = True,
    lock_wait_s: float = 600.0,
) -> dict | State:
    """Pull, ingest new audio, `dvc repro` the stale stages (champion gate included), push.

    One retrain per workspace at a time: a second one is skipped with a message.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    root = Path(workspace).expanduser().resolve() if workspace else project_root()
    summary: dict[str, Any] = {"workspace": str(root), "status": "completed", "pull": "not run",
                               "stages": [], "push": "not run"}
    try:
        with retrain_lock(root):
            if pull_first:
                summary["pull"] = pull(root, lock_wait_s)
            if ingest:
                summary["stages"] += ingest_new_audio(root, lock_wait_s)
            summary["stages"] += [s for s in repro(root, lock_wait_s) if s not in summary["stages"]]
            if push_after:
                summary["push"] = push(root, lock_wait_s)
    except RetrainBusy as busy:
        logger.warning("%s", busy)
        summary.update(status="skipped", reason=str(busy), seconds=round(time.perf_counter() - started, 1))
        return Completed(name="Skipped", message=str(busy), data=summary)

    summary["registry"] = _registry_decision(root) if "register" in summary["stages"] else {}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    decision = summary["registry"]
    verdict = (
        f"{decision.get('model_name')} gate {decision.get('decision')} -> champion v{decision.get('champion_version')}: {decision.get('reason')}"
        if decision else "no new model version (nothing upstream of register changed)"
    )
    logger.info("retrain of %s: stages run %s; %s", root, summary["stages"] or "none", verdict)
    create_markdown_artifact(
        key="retrain-summary",
        markdown=(
            f"## Retrain\nworkspace: `{root}`\n\n- pull: {summary['pull']}\n"
            f"- stages run: {', '.join(summary['stages']) or 'none (everything up to date)'}\n"
            f"- registry: {verdict}\n- push: {summary['push']}\n- seconds: {summary['seconds']}\n"
        ),
        description="weekly retrain",
    )
    return summary


if __name__ == "__main__":
    retrain_flow()
