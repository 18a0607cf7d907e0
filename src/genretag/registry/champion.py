"""Who serves: the champion history and stack, promotion and rollback by hand.

Every change of champion (the gate, ``promote``, ``rollback``) is appended to the registered
model's tag ``genretag.champion_history``; ``genretag.champion_stack`` lists the champions in order
so that ``rollback`` can restore the previous one. ``promote`` and ``rollback`` do not touch
models/registry.json: it is a DVC output, and changing it would make ``dvc repro`` register again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genretag.core.config import Params
from genretag.core.errors import RegistryError
from genretag.registry.client import (
    CHALLENGER,
    CHAMPION,
    TAG_FLOOR,
    TAG_HISTORY,
    TAG_SERVABLE,
    TAG_STACK,
    alias_version,
    mlflow_error,
    model_tags,
    now,
    open_client,
    resolve_version,
)

log = logging.getLogger(__name__)

HISTORY_KEEP = 200  # entries of the history and the stack kept in their tags (MLflow's 5000-character tag limit)


@dataclass(frozen=True)
class ChampionChange:
    """One change of champion by hand: ``action`` promote | rollback, versions as MLflow numbers, ``at`` ISO 8601 UTC."""

    action: str
    from_version: str | None
    to_version: str
    reason: str
    at: str


def actor() -> str:
    """Who acts: the operating-system user of this process ("unknown user" where there is none)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown user"


def champion_stack(tags: dict[str, str]) -> list[str]:
    """The champions in order (tag ``genretag.champion_stack`` of ``tags``, oldest first)."""
    return [str(v) for v in json.loads(tags.get(TAG_STACK) or "[]")]


def record_champion(client: Any, *, name: str, version: str, action: str, reason: str, previous: str | None,
                    stack: list[str] | None = None) -> None:
    """Append to the champion history; push ``version`` on the stack (or store ``stack`` as given)."""
    tags = model_tags(client, name=name)
    history = json.loads(tags.get(TAG_HISTORY) or "[]")
    history.append({"version": version, "action": action, "from": previous, "reason": reason, "at": now(), "by": actor()})
    if stack is None:
        stack = champion_stack(tags)
        if previous is not None and (not stack or stack[-1] != previous):
            stack.append(previous)  # the alias was moved outside genretag: keep the chain
        if not stack or stack[-1] != version:
            stack.append(version)
    client.set_registered_model_tag(name, TAG_HISTORY, json.dumps(history[-HISTORY_KEEP:]))
    client.set_registered_model_tag(name, TAG_STACK, json.dumps(stack[-HISTORY_KEEP:]))


def champion_history(params: Params, *, root: Path) -> list[dict[str, Any]]:
    """Every recorded change of champion, oldest first: version, action, from, reason, at (UTC), by."""
    client = open_client(params, root=root)
    return json.loads(model_tags(client, name=params.registry.model_name).get(TAG_HISTORY) or "[]")


def _promotion(client: Any, *, name: str, version: str) -> tuple[Any, Any]:
    """(the version to promote, the current champion or None); RegistryError when it cannot be promoted:
    it failed the gate's floor (never served, not even by hand) or it is the champion already."""
    target = resolve_version(client, name=name, ref=str(version))
    if target.tags.get(TAG_SERVABLE) == "false":
        raise RegistryError(f"{name} v{target.version} failed the gate's floor and is never served: {target.tags.get(TAG_FLOOR, '')}")
    current = alias_version(client, name=name, alias=CHAMPION)
    if current is not None and str(current.version) == str(target.version):
        raise RegistryError(f"{name} v{target.version} is already the champion")
    return target, current


def check_promotable(params: Params, *, root: Path, version: str) -> None:
    """Raise RegistryError (one line) when :func:`promote` would refuse ``version``; else nothing."""
    _promotion(open_client(params, root=root), name=params.registry.model_name, version=version)


def promote(params: Params, *, root: Path, version: str, reason: str) -> ChampionChange:
    """Make ``version`` the champion by hand, outside the gate's promotion rule but never past its floor
    (:func:`check_promotable`); the reason is recorded on the version and in the history."""
    client = open_client(params, root=root)
    name = params.registry.model_name
    target, current = _promotion(client, name=name, version=version)
    previous = str(current.version) if current is not None else None
    change = ChampionChange("promote", previous, str(target.version), reason, now())
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    challenger = alias_version(client, name=name, alias=CHALLENGER)
    if challenger is not None and str(challenger.version) == change.to_version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, change.to_version, "genretag.promoted", json.dumps(asdict(change)))
    record_champion(client, name=name, version=change.to_version, action="promote", reason=reason, previous=previous)
    log.info("%s v%s promoted to champion by hand (was v%s): %s", name, change.to_version, previous, reason)
    return change


def rollback(params: Params, *, root: Path, reason: str) -> ChampionChange:
    """Give the champion alias back to the previous champion; the reason is recorded.

    Raises RegistryError when there is no champion, or no earlier champion that still exists.
    """
    client = open_client(params, root=root)
    name = params.registry.model_name
    champion = alias_version(client, name=name, alias=CHAMPION)
    if champion is None:
        raise RegistryError(f"registered model {name!r} has no champion to roll back")
    current = str(champion.version)
    stack = champion_stack(model_tags(client, name=name))
    if not stack or stack[-1] != current:
        stack.append(current)
    stack.pop()
    while stack:
        try:
            client.get_model_version(name, stack[-1])
            break
        except mlflow_error():
            stack.pop()  # deleted since
    if not stack:
        raise RegistryError(f"{name}: no previous champion to roll back to (v{current} is the only one)")
    change = ChampionChange("rollback", current, stack[-1], reason, now())
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    client.set_model_version_tag(name, current, "genretag.rolled_back", json.dumps(asdict(change)))
    client.set_model_version_tag(name, change.to_version, "genretag.restored", json.dumps(asdict(change)))
    record_champion(client, name=name, version=change.to_version, action="rollback", reason=reason, previous=current, stack=stack)
    log.info("%s champion rolled back from v%s to v%s: %s", name, current, change.to_version, reason)
    return change
