"""Process environment the project sets for itself wherever it runs."""

import os

# Every tool in the stack phones home unless told not to; the pipeline must run offline.
OFFLINE_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def quiet_telemetry() -> None:
    """Switch off analytics of DVC, Prefect, MLflow and GX unless the caller set them."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible to this process: a /dev/nvidia<N> device node exists and
    $CUDA_VISIBLE_DEVICES does not hide every device ("" or "-1" hides them; see the CUDA docs)."""
    from pathlib import Path

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))
