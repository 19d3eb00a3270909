"""Training speed of the classifiers on this machine (issue 6 budget: notebooks 05-07 in <= 6 min, quick).

Times one epoch of the baseline CNN and the PIF network (quick settings: 4 mm working grid
40x48x40, channels 4-8-16-32, 48 training + 12 validation volumes, batch 8) and the 2 mm grid
of the full profile, and prints seconds per epoch and peak resident memory. Random volumes:
the cost does not depend on the content.
"""

from __future__ import annotations

import resource
import tempfile
import time

import numpy as np


def main() -> None:
    from nbutils.classify.lightning import fit_classifier
    from nbutils.classify.models import BaselineCNN, PIFNet

    rng = np.random.default_rng(0)
    settings = [
        ("quick 4 mm", (40, 48, 40), [4, 8, 16, 32], 3),
        ("full 2 mm", (80, 96, 80), [8, 16, 32, 64], 5),
    ]
    for label, shape, channels, patch in settings:
        x = rng.normal(size=(60, 1, *shape)).astype(np.float32)
        y = np.array([0, 1] * 30)
        makers = {
            "baseline": lambda ch=channels: BaselineCNN(channels=ch, hidden=32),
            "pif": lambda ch=channels, s=shape, p=patch: PIFNet(s, channels=ch, patch_size=p, hidden=32),
        }
        for name, make in makers.items():
            with tempfile.TemporaryDirectory() as logs:
                start = time.perf_counter()
                result = fit_classifier(make, (x[:48], y[:48]), (x[48:], y[48:]), n_classes=2, log_dir=logs,
                                        max_epochs=2, patience=10)
                total = time.perf_counter() - start
            print(f"{label:10s} {name:8s} {result.seconds / result.epochs_run:6.2f} s/epoch "
                  f"(fit incl. set-up {total:.1f} s for {result.epochs_run} epochs)", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
