"""How fast the oracle's references run, against the machine's BLAS and torch, in one run.

Prints, side by side and as ratios:

* attention (causal, float64): the reference's value plus its tolerance bound (what judging
  one output costs), against torch's float64 math SDPA (``SDPBackend.MATH``) and against the
  two bare matrix products Q Kᵀ and P V (the BLAS floor), at L = 256, 512, 1024, 2048;
* the norms against one read+write pass; the high-precision (mpmath) reference on a small
  input; what ``import transpec`` costs and pulls in;
* with ``--long``: the long-context targets, each in a fresh subprocess that reports its own
  peak resident memory (``VmHWM`` of ``/proc/self/status``, else ``ru_maxrss``) and time:
  causal attention, one head, E = 128, judged on sampled rows at L = 131,072 and in full at
  L = 16,384. "Judged"
  is the oracle's side: the float64 reference of the judged rows, their tolerance bound, and
  the comparison with an implementation's output on those rows (torch float32 SDPA of the
  judged query rows against every key, which equals those rows of the whole output).

    python benchmarks/speed.py            # the default sizes
    python benchmarks/speed.py --quick    # smaller sizes, a few seconds
    python benchmarks/speed.py --long     # also the long-context targets (minutes)

Each figure is the best of ``--repeat`` runs (default 5), in milliseconds; for attention also
the best CPU time (user + system of every thread) of the same runs. On a machine shared with
other work, run with ``OPENBLAS_NUM_THREADS`` set to the cores actually free: OpenBLAS threads
that wait on busy cores make every BLAS figure many times slower. torch's SDPA then takes the
same number of threads (``torch.set_num_threads``), so that both columns use as many.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transpec.adapters.base import Precision
from transpec.oracle.kernels import highprec, reference, tolerance


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    return best_wall_cpu_ms(fn, repeat)[0]


def best_wall_cpu_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The best wall time and the best CPU time (this process, every thread) of ``repeat``
    runs after one warm-up, in milliseconds."""
    fn()  # warm up (page faults, BLAS thread start)
    walls, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return 1e3 * min(walls), 1e3 * min(cpus)


def _torch_math_sdpa() -> Callable[..., object] | None:
    """torch's float64 math SDPA (the reference-like backend), or None without torch."""
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return None
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))

    def run(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> object:
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
            return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)

    return run


def attention_rows(sizes: list[tuple[int, int, int, int]], repeat: int) -> list[str]:
    rng = np.random.default_rng(0)
    math_sdpa = _torch_math_sdpa()
    precision = Precision("float64", "float64")
    rows = []
    for b, h, n, d in sizes:
        q = rng.standard_normal((b, h, n, d))
        k = rng.standard_normal((b, h, n, d))
        v = rng.standard_normal((b, h, n, d))

        def floor(q: np.ndarray = q, k: np.ndarray = k, v: np.ndarray = v) -> object:
            return np.matmul(np.matmul(q, np.swapaxes(k, -1, -2)), v)

        def judged(q: np.ndarray = q, k: np.ndarray = k, v: np.ndarray = v) -> object:
            ref = reference.attention(q, k, v, is_causal=True)
            return tolerance.tolerance("attention", ref, "float32", precision).bound

        def one_block(q: np.ndarray = q, k: np.ndarray = k, v: np.ndarray = v) -> object:
            ref = reference.attention(q, k, v, is_causal=True, streaming=False)
            return tolerance.tolerance("attention", ref, "float32", precision).bound

        t_floor, cpu_floor = best_wall_cpu_ms(floor, repeat)
        t_ref, cpu_ref = best_wall_cpu_ms(judged, repeat)
        t_one = best_ms(one_block, repeat)
        flops = 4.0 * b * h * n * n * d
        line = (
            f"attention (B,H,L,E)=({b},{h},{n},{d}) causal  value+bound {t_ref:8.1f} ms "
            f"(cpu {cpu_ref:8.1f})   (whole matrix {t_one:8.1f} ms)   2 matmuls {t_floor:7.1f} ms "
            f"(cpu {cpu_floor:7.1f})   ratio to matmuls {t_ref / t_floor:5.2f}"
        )
        if math_sdpa is not None:
            t_math = best_ms(lambda q=q, k=k, v=v: math_sdpa(q, k, v), repeat)
            line += f"   torch f64 math SDPA {t_math:7.1f} ms   ratio {t_ref / t_math:5.2f}"
        rows.append(line + f"   BLAS {flops / t_floor / 1e6:6.2f} GFLOP/s")
    return rows


#: the long-context targets: (label, L, judged rows: "sampled" or "all")
LONG_TARGETS: tuple[tuple[str, int, str], ...] = (
    ("L=131072 causal, one head, E=128, sampled rows", 131072, "sampled"),
    ("L=16384 causal, one head, E=128, every row", 16384, "all"),
)


def judge_long(length: int, rows: str) -> dict[str, float]:
    """Judge causal attention of one head (E = 128) at ``length`` in this process: the
    reference of the judged rows, their bound, the comparison with torch float32 SDPA's
    output on them. Returns seconds, peak memory and what was judged."""
    import resource

    import torch

    from transpec.oracle.engine.compare import compare

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, length, 128)) for _ in range(3))
    args = {
        "q": q,
        "k": k,
        "v": v,
        "attn_mask": None,
        "is_causal": True,
        "scale": None,
        "enable_gqa": False,
    }
    ref = reference.attention_reference(
        args,
        conventions=reference.CANONICAL,
        dtype="float32",
        rows="sampled" if rows == "sampled" else None,
    )
    t_ref = time.perf_counter() - start
    index = np.arange(length) if ref.rows is None else np.asarray(ref.rows)
    bound = tolerance.tolerance("attention", ref, "float32", Precision("float32", "float32"))
    # the implementation's output on the judged rows: each row against every key it may see
    tq, tk, tv = (torch.from_numpy(a.astype(np.float32)) for a in (q, k, v))
    out = np.empty(ref.value.shape, dtype=np.float64)
    t_impl_start = time.perf_counter()
    with torch.no_grad():
        for r0 in range(0, len(index), 256):
            chunk = torch.from_numpy(index[r0 : r0 + 256])
            keep = torch.arange(length)[None, :] <= chunk[:, None]
            o = torch.nn.functional.scaled_dot_product_attention(
                tq[..., chunk, :], tk, tv, attn_mask=keep
            )
            out[..., r0 : r0 + 256, :] = o.double().numpy()
    t_impl = time.perf_counter() - t_impl_start
    verdict = compare(out, ref, bound)
    seconds = time.perf_counter() - start - t_impl
    peak = _peak_rss_gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {
        "seconds": seconds,
        "reference_seconds": t_ref,
        "impl_seconds": t_impl,
        "peak_gib": peak,
        "rows": float(len(index)),
        "ratio": float(verdict.ratio),
    }


def _peak_rss_gib(maxrss_gib: float) -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status where there is one
    (ru_maxrss survives exec on Linux, so a child started by a large parent reports the
    parent's peak), else ``maxrss_gib``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return maxrss_gib


def long_rows() -> list[str]:
    lines = []
    for label, length, rows in LONG_TARGETS:
        code = (
            "import json, sys; sys.path.insert(0, 'benchmarks'); import speed; "
            f"print(json.dumps(speed.judge_long({length}, {rows!r})))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        lines.append(
            f"{label}: judged {int(r['rows'])} rows in {r['seconds']:.1f} s (reference "
            f"{r['reference_seconds']:.1f} s; the implementation's rows took "
            f"{r['impl_seconds']:.1f} s more), peak memory {r['peak_gib']:.2f} GiB, "
            f"worst ratio {r['ratio']:.3g}; targets 600 s and 8 GiB: time ratio "
            f"{r['seconds'] / 600:.3f}, memory ratio {r['peak_gib'] / 8:.3f}"
        )
    return lines


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
    parser.add_argument("--long", action="store_true", help="also the long-context targets")
    opts = parser.parse_args(argv)
    if opts.quick:
        att = [(2, 4, 128, 64), (1, 8, 256, 64)]
        norms = [(1024, 256)]
    else:
        att = [(2, 8, 256, 64), (4, 8, 512, 64), (1, 16, 1024, 128), (1, 4, 2048, 128)]
        norms = [(4096, 1024), (16384, 4096)]
    print(f"numpy {np.__version__}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for line in attention_rows(att, opts.repeat):
        print(line)
    for line in norm_rows(norms, opts.repeat):
        print(line)
    print(highprec_row(opts.repeat))
    print(import_row())
    if opts.long:
        for line in long_rows():
            print(line, flush=True)


if __name__ == "__main__":
    main()
