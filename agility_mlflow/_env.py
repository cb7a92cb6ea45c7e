"""Offline, quiet defaults, applied before MLflow, Ragas or DeepEval are imported.

Each is a default only: a variable the user has set is left alone.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow first tries to download its model price catalog: offline that stalls ~9 s per process.
    "MLFLOW_MODEL_CATALOG_URI": "",
    "RAGAS_DO_NOT_TRACK": "true",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
    "DEEPEVAL_DISABLE_DOTENV": "1",
    "DEEPEVAL_FILE_SYSTEM": "READ_ONLY",
    # llama.cpp's OpenMP threads spin-wait; on shared cores that costs 5-8x.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_offline_defaults() -> None:
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
