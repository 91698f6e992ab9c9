"""Error/bound ratios of the SwiGLU feed-forward's properties: correct implementations (no
false alarm, how tight) and the corpus's chaffs (caught, by how much) and wheats.

    python benchmarks/swiglu_ratios.py --examples 300 --chaff-examples 50

For each implementation, dtype and property: the examples drawn by the property's strategy
(Hypothesis, a fixed seed per run, no shrinking), the median and the maximum of the ratio
|error| / bound (<= 1 passes), and for a failure the example at which it first failed and its
ratio. Implementations: transpec's NumPy and torch adapters (``F.linear``, ``F.silu``), then
the corpus entries of ``swiglu_feed_forward``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

from transpec.adapters.base import Adapter
from transpec.oracle import swiglu
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation


def measure(adapter: Adapter, dtype: str, prop: Any, examples: int, run_seed: int) -> str:
    """One row: ratios over the examples, or where the property first failed."""
    harness = Harness(adapter, dtype)
    ratios: list[float] = []
    failed: list[str] = []

    def test(args: dict[str, Any]) -> None:
        try:
            ratios.append(prop.check(harness, args))
        except PropertyViolation as exc:
            if not failed:
                failed.append(f"failed at example {len(ratios) + 1}, ratio {exc.ratio:.3g}")
            raise
        except ImplementationFailure as exc:
            if not failed:
                failed.append(f"failed at example {len(ratios) + 1}: {exc.kind}")
            raise

    wrapped = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )(seed(run_seed)(given(prop.inputs(dtype))(test)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapped()
        except (PropertyViolation, ImplementationFailure):
            return failed[0]
    r = np.asarray(ratios)
    return f"{r.size} examples, median {np.median(r):.3g}, max {r.max():.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="per correct implementation")
    parser.add_argument("--chaff-examples", type=int, default=50, help="per corpus entry")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.adapters.torch.adapter import TorchAdapter

    props = swiglu.properties()
    rows: list[tuple[str, Adapter, int]] = [
        ("correct", NumpyAdapter(), args.examples),
        ("correct", TorchAdapter(), args.examples),
    ]
    for entry in corpus.select(swiglu.COMPONENT, backward=False):
        rows.append((entry.kind, entry.make(), args.chaff_examples))
    for kind, adapter, n in rows:
        for dtype in adapter.dtypes:
            for prop in props:
                result = measure(adapter, dtype, prop, n, args.seed)
                print(f"{kind:7s} {adapter.name:30s} {dtype:9s} {prop.name:31s} {result}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
