"""Run every benchmark, one after another in this one invocation, and print the README's Performance table.

Each script's own output is passed through as it runs; the rows it prints for the table (lines
starting with ``| ``) are collected, and the table is printed last, headed by when and on what
machine it was measured and the load average as each script started. Paste it over the table in
README.md's "Performance" section.

Run: python bench/report.py [--quick]   (--quick: one repeat each and N up to 10k, to try the scripts out)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import argparse
import datetime
import os
import platform
import subprocess
import time

BENCH = Path(__file__).resolve().parent
SCRIPTS: list[tuple[str, list[str], list[str]]] = [  # script, its arguments, and with --quick
    ("throughput.py", [], ["--repeats", "1"]),
    ("startup.py", [], ["--repeats", "1"]),
    ("scale.py", [], ["--sizes", "1000,10000", "--repeats", "1"]),
    ("tracking.py", [], ["--repeats", "1"]),
    ("cache.py", [], ["--repeats", "1"]),
    ("local_model.py", [], []),
    ("sweep_efficiency.py", [], ["--seeds", "1"]),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    started, began = utc_now(), time.perf_counter()
    rows: list[str] = []
    loads: list[str] = []
    for script, arguments, quick in SCRIPTS:
        loads.append(f"{script} {os.getloadavg()[0]:.1f}")
        command = [sys.executable, str(BENCH / script), *(quick if options.quick else arguments)]
        print(f"\n$ {' '.join(['python', 'bench/' + script, *command[2:]])}", flush=True)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=BENCH.parent)
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("| "):
                rows.append(line.rstrip("\n"))
        if process.wait() != 0:
            raise SystemExit(f"bench/{script} failed with exit code {process.returncode}")
    minutes = (time.perf_counter() - began) / 60
    print(f"\nMeasured {started} to {utc_now()} UTC ({minutes:.0f} min) by `python bench/report.py{' --quick' if options.quick else ''}`, "
          f"the scripts one after another, on {platform.node()}: {os.cpu_count()} cores ({cpu_model()}), "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}; load average as each script started: "
          f"{', '.join(loads)}. Figures are median [min-max] of the repeats each script states; model servers are "
          "stand-ins on 127.0.0.1 with a fixed latency, each in its own process.\n")
    print("| what | figure | target | command |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
