"""Run every benchmark script (benchmarks/bench_*.py) in turn; `make bench` calls this.

Benchmarks measure the speed and memory targets of the issues on this machine;
they are run on demand, never as timed assertions in the test suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Studies that train several models (tens of minutes): run them by hand, not with `make bench`.
STUDIES = {"bench_ae_variants.py", "bench_tumour_settings.py", "bench_tumour_learning_curve.py",
           "bench_calibration_by_age.py", "bench_tumour_contrast.py"}  # the last three need a finished run's data


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(p for p in here.glob("bench_*.py") if p.name not in STUDIES):
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
