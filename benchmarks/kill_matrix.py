"""The kill matrix: which transpec property catches each chaff, in which dtype, how fast.

For every chaff of the corpus, every dtype and every property of its component, the runner's
``ci`` examples are replayed without shrinking until the first failing one
(:func:`corpus.judge.first_kill`). Printed:

1. per chaff and dtype, the first property (in the runner's order) that kills it, with the
   number of the killing example and the seconds to reach it ("-" when it survives every
   property; "n/v" marks a dtype in which the defect is declared invisible);
2. the full chaff x property matrix: the dtypes in which each property kills
   (6 = float64, 3 = float32, h = float16, b = bfloat16);
3. survivors: chaffs that live in a dtype where their defect is visible.

The backward corpus (``corpus.BACKWARD_CHAFFS``: wrong backward passes under a right forward) is
judged by the backward properties of its component only, the forward corpus by the forward
ones; ``--corpus`` picks either or both (default).

    python benchmarks/kill_matrix.py                  # every chaff, 2 worker processes
    python benchmarks/kill_matrix.py --corpus backward
    python benchmarks/kill_matrix.py --jobs 4 --json kill_matrix.json
    python benchmarks/kill_matrix.py --only attention_scale_inv_d,causal_ignored
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import corpus
from corpus.judge import Kill, first_kill, properties_of

DTYPE_MARK = {"float64": "6", "float32": "3", "float16": "h", "bfloat16": "b"}
SHORT = {
    "equivalence": "equiv",
    "error_statistic": "stat",
    "shape_dtype": "shape",
    "causality": "causal",
    "key_padding_invariance": "kpad",
    "batch_independence": "batch",
    "head_independence": "head",
    "kv_permutation_invariance": "kvperm",
    "query_permutation_equivariance": "qperm",
    "value_linearity": "vlin",
    "convex_hull": "hull",
    "fully_masked_rows": "fmrow",
    "large_logits": "large",
    "gqa": "gqa",
    "grad_linearity": "glin",
    "grad_row_sum": "grsum",
    "grad_orthogonality": "gorth",
    "grad_causal_zeros": "gcaus",
    "grad_masked_keys_zero": "gmask",
    "grad_gqa_group_sum": "ggqa",
    "grad_padded_keys_zero": "gpad",
}


def _properties(name: str) -> tuple[str, ...]:
    """The properties that judge a chaff: the backward ones for a backward chaff, the forward
    ones otherwise (in the runner's order)."""
    entry = corpus.entry(name)
    return properties_of(entry.component, backward=entry.gradients)


def _job(name: str, dtype: str) -> list[Kill]:
    entry = corpus.entry(name)
    return [first_kill(entry.make(), entry.component, prop, dtype) for prop in _properties(name)]


#: abbreviations of the layers' parameter names in the backward columns
_PARAM_WORDS = (
    ("self_attn.", "sa."),
    ("multihead_attn.", "ca."),
    ("in_proj_", "in_"),
    ("out_proj.", "out_"),
    ("_proj_weight", "_w"),
    ("weight", "w"),
    ("bias", "b"),
    ("linear", "l"),
    ("norm", "n"),
)


def _short(prop: str) -> str:
    if prop.startswith("grad_equivalence_"):  # g= and the gradient's (abbreviated) name
        name = prop[len("grad_equivalence_") :]
        for word, short in _PARAM_WORDS:
            name = name.replace(word, short)
        return "g=" + name
    return SHORT.get(prop, prop[:6])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--only", default="", help="comma-separated chaff names")
    parser.add_argument("--dtypes", default=",".join(corpus.ALL_DTYPES))
    parser.add_argument("--json", default="", help="write every Kill record to this file")
    parser.add_argument(
        "--corpus", choices=("all", "forward", "backward"), default="all", help="which chaffs"
    )
    args = parser.parse_args(argv)
    chosen = {
        "all": corpus.CHAFFS + corpus.BACKWARD_CHAFFS,
        "forward": corpus.CHAFFS,
        "backward": corpus.BACKWARD_CHAFFS,
    }[args.corpus]
    names = [n for n in args.only.split(",") if n] or [e.name for e in chosen]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for n in names:
        if not corpus.entry(n).is_chaff:
            parser.error(f"{n} is not a chaff")
    judged = {n: _properties(n) for n in names}  # the catalogue, read before any job runs
    jobs = [(n, d) for n in names for d in dtypes]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(zip(jobs, pool.map(_job, *zip(*jobs, strict=True)), strict=True))
    wall = time.perf_counter() - start

    # 1. first killer per chaff and dtype
    width = max(len(n) for n in names)
    print(f"kill matrix: {len(names)} chaffs x {len(dtypes)} dtypes, ci profile, {wall:.0f} s")
    print()
    print("first property to kill (in the runner's order): property #example seconds")
    print(f"{'chaff':{width}}  " + "  ".join(f"{d:24}" for d in dtypes))
    survivors: list[tuple[str, str, str]] = []
    for n in names:
        entry = corpus.entry(n)
        cells = []
        for d in dtypes:
            kills = [k for k in results[(n, d)] if k.status == "killed"]
            if kills:
                k = kills[0]
                cell = f"{_short(k.prop)} #{k.examples} {k.seconds:.2f}s"
            else:
                cell = "-" if d in entry.visible else "n/v"
                if d in entry.visible:
                    survivors.append((n, d, entry.why))
            cells.append(f"{cell:24}")
        print(f"{n:{width}}  " + "  ".join(cells))

    # 2. chaff x property: dtypes in which the property kills
    print()
    print("chaff x property: dtypes in which the property kills (6 fp64, 3 fp32, h fp16, b bf16)")
    groups = dict.fromkeys((corpus.entry(n).component, corpus.entry(n).gradients) for n in names)
    for component, gradients in groups:
        rows = [
            n
            for n in names
            if (corpus.entry(n).component, corpus.entry(n).gradients) == (component, gradients)
        ]
        props = judged[rows[0]]
        print()
        title = f"{component} (backward)" if gradients else component
        col = max(6, *(len(_short(p)) for p in props))
        print(f"{title:{width}}  " + " ".join(f"{_short(p):>{col}}" for p in props))
        for n in rows:
            cells = []
            for p in props:
                marks = "".join(
                    DTYPE_MARK[d]
                    for d in dtypes
                    if any(k.prop == p and k.status == "killed" for k in results[(n, d)])
                )
                cells.append(f"{marks or '.':>{col}}")
            print(f"{n:{width}}  " + " ".join(cells))

    # 3. survivors
    print()
    total = sum(1 for n in names for d in dtypes if d in corpus.entry(n).visible)
    print(f"killed where visible: {total - len(survivors)} of {total} (chaff, dtype) pairs")
    for n, d, why in survivors:
        print(f"  SURVIVES {n} in {d}: visible because {why}")
    unexpected = [
        (n, d, next(k.prop for k in results[(n, d)] if k.status == "killed"))
        for n in names
        for d in dtypes
        if d not in corpus.entry(n).visible and any(k.status == "killed" for k in results[(n, d)])
    ]
    if unexpected:
        print("killed where the defect is declared invisible (a wrong claim, or a false alarm):")
    for n, d, p in unexpected:
        print(f"  {n} in {d} by {p}")
    errors = [(n, d, k) for (n, d), ks in results.items() for k in ks if k.status == "error"]
    for n, d, k in errors:
        print(f"  transpec error: {n} {d} {k.prop}: {k.message[:200]}")
    if args.json:
        records = {f"{n}|{d}": [asdict(k) for k in ks] for (n, d), ks in results.items()}
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
