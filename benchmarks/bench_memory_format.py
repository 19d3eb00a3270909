"""Which memory layout trains the suite's networks fastest on this CPU: contiguous or channels-last?

Run on demand (about 2 minutes)::

    .venv/bin/python benchmarks/bench_memory_format.py

For each network, the same seeded weights and random batch are trained for a few Adam steps on one thread
(as every kernel of a ``nbutils run --jobs 2`` demo trains), once with the weights and input in PyTorch's
default contiguous layout and once channels-last, alternating so drift in machine speed hits both alike. It
prints the median step time of each, their ratio (the classifiers convert their input to channels-last
themselves, so for them "contiguous" means contiguous weights, which is where the time goes), and the largest difference between the two layouts' first
outputs (the layout changes only the order of floating-point sums).

- classifiers: notebook 06's quick tumour networks (8-16-32-64, batch 8, 40x48x40 working grid), which build
  themselves channels-last (:data:`nbutils.classify.models.CHANNELS_LAST`), and notebook 06's 2D slice
  baseline (batch 8, 64x64);
- the normative autoencoder of notebook 02 (16-32-64-128, latent 32, batch 4, 80x96x80), which stays
  contiguous: its group norms and transposed convolutions were slower channels-last here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from nbutils.classify.models import CHANNELS_LAST, BaselineCNN, PIFNet
from nbutils.normative.model import ConvAutoencoder


def networks() -> dict[str, tuple]:
    """name -> (factory, input shape, loss on (output, input))."""
    ce = lambda out, x: nn.functional.cross_entropy(out, torch.arange(len(out)) % out.shape[1])  # noqa: E731
    l1 = lambda out, x: (out - x).abs().mean()  # noqa: E731
    return {
        "tumour baseline (3D)": (lambda: BaselineCNN(4, [8, 16, 32, 64], pooling="max"), (8, 1, 40, 48, 40), ce),
        "tumour PIF (3D)": (lambda: PIFNet((40, 48, 40), 4, [8, 16, 32, 64]), (8, 1, 40, 48, 40), ce),
        "slice baseline (2D)": (lambda: BaselineCNN(4, [8, 16, 32], spatial_dims=2), (8, 1, 64, 64), ce),
        "autoencoder (3D)": (lambda: ConvAutoencoder(channels=(16, 32, 64, 128), latent_channels=32), (4, 1, 80, 96, 80), l1),
    }


def step_times(make, shape, loss_fn, layout: torch.memory_format, steps: int) -> tuple[list[float], torch.Tensor]:
    """Seconds per training step (first step dropped) and the first output, in ``layout``."""
    torch.manual_seed(0)
    net = make().to(memory_format=layout)
    x = torch.randn(*shape).contiguous(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times, first = [], None
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = net(x)
        loss = loss_fn(out, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        first = out.detach() if first is None else first
    return times[1:], first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed training steps per run")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per layout")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d')}, {args.threads} thread(s), {args.steps} steps x {args.repeats} runs; "
          "median seconds per training step (random data)")
    for name, (make, shape, loss_fn) in networks().items():
        cl = CHANNELS_LAST[len(shape) - 2]
        runs: dict[str, list[float]] = {"contiguous": [], "channels-last": []}
        outs = {}
        for _ in range(args.repeats):
            for label, layout in (("contiguous", torch.contiguous_format), ("channels-last", cl)):
                times, outs[label] = step_times(make, shape, loss_fn, layout, args.steps)
                runs[label] += times
        med = {k: statistics.median(v) for k, v in runs.items()}
        diff = float((outs["contiguous"] - outs["channels-last"]).abs().max())
        print(f"{name:22s} contiguous {med['contiguous']:.3f} s  channels-last {med['channels-last']:.3f} s  "
              f"ratio {med['channels-last'] / med['contiguous']:.2f}  max |output difference| {diff:.1e}",
              flush=True)


if __name__ == "__main__":
    main()
