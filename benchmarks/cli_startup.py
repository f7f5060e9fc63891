"""Time ``sovit --help`` (the installed console script) against ``python -m sovit_hf --help`` (which imports the
package, torch and transformers first), interleaved, and write ``benchmarks/results/cli_startup.json``.

    python benchmarks/cli_startup.py [--rounds 7]

Wall time of each whole process (start to exit), median over the rounds; the machine's load average is recorded
with it, since a shared machine slows both.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sovit_hf (its output_folder writes the record) from this checkout
RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.json"


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd="/", check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    script = shutil.which("sovit", path=str(Path(sys.executable).parent)) or shutil.which("sovit")
    if script is None:
        raise SystemExit("no `sovit` console script next to this Python: pip install -e . first")
    commands = {
        "sovit --help": [script, "--help"],
        "python -m sovit_hf --help": [sys.executable, "-m", "sovit_hf", "-h"],
    }
    times = {name: [] for name in commands}
    load_before = os.getloadavg()
    for _ in range(args.rounds):  # interleaved: both see the same load
        for name, command in commands.items():
            times[name].append(_time(command))
    record = {
        "median_s": {name: statistics.median(values) for name, values in times.items()},
        "all_s": times,
        "rounds": args.rounds,
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from sovit_hf.output_folder import write_json_atomic

    write_json_atomic(RESULTS, record)
    for name, value in record["median_s"].items():
        print(f"{name}: median {value:.3f} s over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
