"""`agility --help` loads only the CLI: no MLflow, Optuna, pandas, pydantic or plotting until a command needs them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

HEAVY = ("mlflow", "optuna", "pandas", "pydantic", "matplotlib", "plotly", "numpy", "openai", "boto3", "ragas", "deepeval")


def test_help_imports_no_heavy_library() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from agility_mlflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    main(['--help'], standalone_mode=False)\n"
        f"print(__import__('json').dumps({{'help': out.getvalue(), 'loaded': sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))}}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    report = json.loads(result.stdout)
    assert "compare" in report["help"] and "run" in report["help"]
    assert report["loaded"] == []


def test_the_public_api_still_loads_on_first_use() -> None:
    import agility_mlflow

    assert agility_mlflow.load_config.__module__ == "agility_mlflow.config"
    assert agility_mlflow.GoldenDataset.__name__ == "GoldenDataset"
