"""Retry policy of the flows: transient faults are retried, permanent ones fail at once."""

import pytest
from prefect import flow, task

from flows.common import IO_RETRIES, PermanentFault, maybe_inject_fault


@task(**{**IO_RETRIES, "retry_delay_seconds": 0})
def guarded(point: str) -> str:
    maybe_inject_fault(point)
    return "done"


@flow
def drill(point: str):
    return (guarded(point, return_state=True),)  # a tuple, so that a failed task does not fail the flow


def _attempts(state) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


def test_transient_fault_is_retried_until_it_clears(prefect_api, monkeypatch):
    monkeypatch.setenv("GENRETAG_FAULTS", "drill.transient=2")
    (state,) = drill("drill.transient")
    assert state.is_completed() and state.result() == "done"
    assert _attempts(state) == 3


def test_permanent_fault_fails_without_retrying(prefect_api, monkeypatch):
    monkeypatch.setenv("GENRETAG_FAULTS", "drill.permanent=permanent")
    (state,) = drill("drill.permanent")
    assert state.is_failed()
    with pytest.raises(PermanentFault, match="drill.permanent: injected permanent fault"):
        state.result()
    assert _attempts(state) == 1


def test_fault_switch_is_off_by_default(monkeypatch):
    monkeypatch.delenv("GENRETAG_FAULTS", raising=False)
    maybe_inject_fault("anything")  # no exception
