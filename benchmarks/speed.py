"""How fast the oracle's references run, against the machine's BLAS.

Prints, for attention and the norms at a few sizes: the float64 reference's time, the time of
the matrix products alone (the BLAS floor the reference cannot beat), their ratio; the
high-precision (mpmath) reference on a small input; and what ``import transpec`` costs and
pulls in.

    python benchmarks/speed.py            # the default sizes
    python benchmarks/speed.py --quick    # smaller sizes, a few seconds

Each figure is the best of ``--repeat`` runs (default 5), in milliseconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from transpec.oracle.kernels import highprec, reference


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up (page faults, BLAS thread start)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def attention_rows(sizes: list[tuple[int, int, int, int]], repeat: int) -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for b, h, n, d in sizes:
        q = rng.standard_normal((b, h, n, d))
        k = rng.standard_normal((b, h, n, d))
        v = rng.standard_normal((b, h, n, d))

        def floor(q: np.ndarray = q, k: np.ndarray = k, v: np.ndarray = v) -> object:
            return np.matmul(np.matmul(q, np.swapaxes(k, -1, -2)), v)

        def ref(q: np.ndarray = q, k: np.ndarray = k, v: np.ndarray = v) -> object:
            return reference.attention(q, k, v, is_causal=True)

        t_floor = best_ms(floor, repeat)
        t_ref = best_ms(ref, repeat)
        flops = 4.0 * b * h * n * n * d
        rows.append(
            f"attention (B,H,L,E)=({b},{h},{n},{d}) causal  reference {t_ref:9.2f} ms   "
            f"2 matmuls {t_floor:9.2f} ms   ratio {t_ref / t_floor:5.2f}   "
            f"BLAS {flops / t_floor / 1e6:6.2f} GFLOP/s"
        )
    return rows


def norm_rows(sizes: list[tuple[int, int]], repeat: int) -> list[str]:
    rng = np.random.default_rng(1)
    rows = []
    for m, n in sizes:
        x = rng.standard_normal((m, n))
        w = rng.standard_normal(n)
        bias = rng.standard_normal(n)

        def floor(x: np.ndarray = x) -> object:
            # one pass to read the data and one to write it: the memory-bound floor
            return x.sum(axis=-1, keepdims=True) * x

        def ln(x: np.ndarray = x, w: np.ndarray = w, bias: np.ndarray = bias, n: int = n) -> object:
            return reference.layer_norm(x, (n,), w, bias, 1e-5)

        def rms(x: np.ndarray = x, w: np.ndarray = w, n: int = n) -> object:
            return reference.rms_norm(x, (n,), w, 1e-6)

        t_floor = best_ms(floor, repeat)
        t_ln = best_ms(ln, repeat)
        t_rms = best_ms(rms, repeat)
        rows.append(
            f"layer_norm ({m},{n})  reference {t_ln:8.2f} ms   rms_norm {t_rms:8.2f} ms   "
            f"one read+write pass {t_floor:7.2f} ms   ratio {t_ln / t_floor:5.1f} / "
            f"{t_rms / t_floor:5.1f}"
        )
    return rows


def highprec_row(repeat: int) -> str:
    rng = np.random.default_rng(2)
    args = {
        "q": rng.standard_normal((2, 4, 8, 16)),
        "k": rng.standard_normal((2, 4, 8, 16)),
        "v": rng.standard_normal((2, 4, 8, 16)),
        "attn_mask": None,
        "is_causal": True,
        "scale": None,
        "enable_gqa": False,
    }
    conventions = reference.CANONICAL

    def run() -> object:
        return highprec.compute("attention", args, conventions=conventions, dtype="float64")

    t = best_ms(run, max(1, repeat // 2))
    return f"high precision (mpmath, 40 digits) attention (2,4,8,16): {t:.1f} ms"


def import_row() -> str:
    code = (
        "import sys, time; t = time.perf_counter(); import transpec.oracle.kernels.reference, "
        "transpec.adapters.registry; dt = time.perf_counter() - t; "
        "print(f'{1e3 * dt:.1f}', 'torch' in sys.modules, 'sympy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return (
        f"import transpec.oracle.kernels.reference + adapters.registry: {out[0]} ms; "
        f"torch imported: {out[1]}, sympy imported: {out[2]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    opts = parser.parse_args(argv)
    if opts.quick:
        att = [(2, 4, 128, 64), (1, 8, 256, 64)]
        norms = [(1024, 256)]
    else:
        att = [(2, 8, 256, 64), (4, 8, 512, 64), (1, 16, 1024, 128)]
        norms = [(4096, 1024), (16384, 4096)]
    print(f"numpy {np.__version__}")
    for line in attention_rows(att, opts.repeat):
        print(line)
    for line in norm_rows(norms, opts.repeat):
        print(line)
    print(highprec_row(opts.repeat))
    print(import_row())


if __name__ == "__main__":
    main()
