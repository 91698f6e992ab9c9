"""Gradients: calibration of the backward tolerances, and the side-by-side with the peers' rules.

``calibrate``: correct backward passes (torch's autograd of ``torch.softmax``, ``F.layer_norm``,
``F.rms_norm`` and SDPA -- the math backend, and the default dispatch without the negative
scales of its causal defect --, and the NumPy adapter's ``*_vjp``), every component and dtype,
cases drawn from the gradient properties' own strategy (every regime of the forward plus the
cotangent). Each case is one backward call, every gradient judged against its derived bound;
printed: cases, false alarms, and the median / p99 / max of the worst ratio per case. torch's
reported LayerNorm bias-gradient defect in float16/bfloat16 (docs/torch.md) is counted apart,
in the kernel and in the layers' ``norm*.bias``. With ``--layer-cases N`` the layers
(multi-head attention, the feed-forward blocks, encoder and decoder layers) run too, N cases per
layer and dtype, on every adapter that provides their gradients.

``peers``: the backward corpus (chaffs and wheats) judged on the same cases by

* transpec: every gradient within its derived bound (``grad_equivalence``);
* ``torch.testing.assert_close`` of each gradient against the float64 reference rounded to the
  dtype, with its default (rtol, atol) per dtype;
* FlashAttention's rule: max|grad − ref| <= 2 · max|grad_baseline − ref| + its ulp floor,
  the baseline torch's own autograd in the same dtype (SDPA math for attention);
* ``torch.autograd.gradcheck`` (float64 only: finite differences), default tolerances.

    python benchmarks/gradients.py calibrate --cases 10000 --jobs 2
    python benchmarks/gradients.py calibrate --cases 2000 --chunks 4 --seed 30261 --out DIR
    python benchmarks/gradients.py calibrate --merge DIR [DIR ...]
    python benchmarks/gradients.py calibrate --only 'numpy:*:bfloat16' --cases 2000 --out DIR
    python benchmarks/gradients.py calibrate --cases 0 --layer-cases 250 --jobs 2  # layers only

``--chunks K`` runs K runs of ``--cases`` each with seeds seed, seed+1, ... (a run that is cut
short still leaves whole chunks); ``--out DIR`` writes each finished row there as one JSON file
(adapter, component, dtype, seed), so a long campaign can be topped up with another seed range
and ``--merge`` prints the table of every row saved, summed per adapter, component and dtype.
    python benchmarks/gradients.py peers --cases 6
    python benchmarks/gradients.py peers --cases 6 --entries layers

``layer-bounds``: the layers' gradient ratios under the layer rule of another git revision
(``--against``, default main) and under the working tree's, side by side on the same torch
calls, per layer and dtype (every gradient of every call):

    python benchmarks/gradients.py layer-bounds --against main --cases 40
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the adapters calibrated (each on every dtype it declares)
ADAPTERS = ("torch", "numpy")
COMPONENTS = ("softmax", "attention", "layer_norm", "rms_norm")
#: the layers (``--layer-cases`` per layer and dtype), each run on every adapter that provides
#: its gradients (``Adapter.provides_gradients``: torch by autograd, NumPy once it has the
#: layers' ``*_vjp`` methods)
LAYERS = (
    "multi_head_attention",
    "feed_forward",
    "swiglu_feed_forward",
    "encoder_layer",
    "decoder_layer",
)
#: the adapter that runs each component in the calibration (torch's default attention has the
#: causal negative-scale defect, so it runs without negative scales)
TORCH_ATTENTION = (("torch-math", {}), ("torch", {"scales": ("default", "custom")}))
#: torch findings reported by the oracle, counted apart: torch's LayerNorm accumulates its bias
#: gradient in the input dtype (docs/torch.md) -- the kernel's ``bias`` and, in the layers, the
#: ``norm*.bias`` of their LayerNorms
REPORTED_DTYPES = {"torch": ("float16", "bfloat16")}


def reported(adapter: str, component: str, gradient: str, dtype: str) -> bool:
    """Whether ``gradient`` of ``component`` is one torch's LayerNorm bias-sum finding reaches
    (counted apart from false alarms)."""
    if dtype not in REPORTED_DTYPES.get(adapter.split("-")[0], ()):
        return False
    if component == "layer_norm":
        return gradient == "bias"
    return component in LAYERS and gradient.startswith("norm") and gradient.endswith(".bias")


@dataclass
class Row:
    adapter: str
    component: str
    dtype: str
    cases: int = 0
    false_alarms: int = 0
    reported: int = 0
    ratios: list[float] = field(default_factory=list)
    worst: str = ""
    seconds: float = 0.0
    seed: int = 0


def _draw(
    component: str, dtype: str, cases: int, seed: int, options: dict[str, Any], test: Any
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from transpec.oracle.gradients.strategies import with_cotangent

    run = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )(hypothesis_seed(seed)(given(with_cotangent(component, dtype, **options))(test)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run()


def _calibrate(job: tuple[str, str, str, int, int, dict[str, Any]]) -> Row:
    from hypothesis.errors import UnsatisfiedAssumption

    from transpec.adapters.registry import load_adapter
    from transpec.oracle.engine.compare import compare
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.outcome import ImplementationFailure
    from transpec.oracle.gradients.calls import call_vjp, split_cotangent

    name, component, dtype, cases, seed, options = job
    harness = Harness(load_adapter(name), dtype, "cpu")
    row = Row(name, component, dtype, seed=seed)

    def test(args: dict[str, Any]) -> None:
        rest, g = split_cotangent(args)
        try:
            call = call_vjp(harness, component, rest, g)
        except UnsatisfiedAssumption:
            raise
        except ImplementationFailure as exc:
            row.cases += 1
            row.false_alarms += 1
            row.worst = row.worst or exc.describe()
            return
        row.cases += 1
        worst, alarm, finding = 0.0, False, False
        for key in call.grads:
            result = compare(call.grads[key], call.reference.grads[key], call.tolerances[key])
            if reported(name, component, key, dtype):
                finding |= not result.passed
                continue
            worst = max(worst, float(result.ratio))
            if not result.passed:
                alarm = True
                row.worst = row.worst or f"{key}: {result.message}"
        row.ratios.append(worst)
        row.false_alarms += alarm
        row.reported += finding

    start = time.perf_counter()
    _draw(component, dtype, cases, seed, options, test)
    row.seconds = time.perf_counter() - start
    return row


def _merged(directories: list[str]) -> list[Row]:
    """The rows saved by ``--out`` in each directory, summed per adapter, component and dtype
    (cases and alarms added, ratios pooled; the seed of a merged row is its first one)."""
    merged: dict[tuple[str, str, str], Row] = {}
    for directory in directories:
        for path in sorted(Path(directory).glob("*.json")):
            data = json.loads(path.read_text())
            key = (data["adapter"], data["component"], data["dtype"])
            row = merged.setdefault(key, Row(*key, seed=int(data["seed"])))
            for name in ("cases", "false_alarms", "reported"):
                setattr(row, name, getattr(row, name) + int(data[name]))
            row.ratios += [float(r) for r in data["ratios"]]
            row.seconds += float(data["seconds"])
            row.worst = row.worst or data["worst"]
    return list(merged.values())


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, str, int, int, dict[str, Any]]]:
    """(adapter, component, dtype, cases, seed, strategy options) of every calibration run:
    each kernel with ``--cases``/4 cases, each layer an adapter provides the gradients of with
    ``--layer-cases``, per dtype and chunk, filtered by ``--only``."""
    from transpec.adapters.registry import load_adapter

    jobs = []
    for chunk in range(max(1, args.chunks)):
        for adapter in ADAPTERS:
            loaded = load_adapter(adapter)
            for dtype in loaded.dtypes:
                sizes = [(c, args.cases // 4) for c in COMPONENTS]
                if args.layer_cases > 0:
                    sizes += [(c, args.layer_cases) for c in LAYERS if loaded.provides_gradients(c)]
                for component, cases in sizes:
                    runs = (
                        TORCH_ATTENTION
                        if (adapter, component) == ("torch", "attention")
                        else ((adapter, {}),)
                    )
                    for name, options in runs:
                        if cases <= 0 or (
                            args.only
                            and not any(
                                fnmatch.fnmatch(f"{name}:{component}:{dtype}", pattern)
                                for pattern in args.only.split(",")
                            )
                        ):
                            continue
                        jobs.append((name, component, dtype, cases, args.seed + chunk, options))
    return jobs


def calibrate(args: argparse.Namespace) -> int:
    from concurrent.futures import as_completed

    start = time.perf_counter()
    if args.merge:
        rows = _merged(args.merge)
        title = f"gradient calibration merged from {', '.join(args.merge)}: {len(rows)} rows"
    else:
        jobs = _jobs(args)
        out = Path(args.out) if args.out else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        rows = []
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for future in as_completed([pool.submit(_calibrate, job) for job in jobs]):
                row = future.result()
                rows.append(row)
                if out is not None:
                    name = f"{row.adapter}-{row.component}-{row.dtype}-{row.seed}.json"
                    (out / name).write_text(json.dumps(asdict(row)))
        order = {(*job[:3], job[4]): i for i, job in enumerate(jobs)}
        rows.sort(key=lambda r: order[(r.adapter, r.component, r.dtype, r.seed)])
        seeds = f"seed {args.seed}" + (
            f"..{args.seed + args.chunks - 1}" if args.chunks > 1 else ""
        )
        title = (
            f"gradient calibration: {args.cases // 4} cases per adapter x component x dtype"
            + (f", {args.layer_cases} per layer x dtype" if args.layer_cases > 0 else "")
            + f" x chunk ({args.chunks}), {seeds}"
        )
    print(f"{title}, {time.perf_counter() - start:.0f} s\n")
    head = (
        f"{'adapter':10} {'component':20} {'dtype':8} {'cases':>6} {'false':>5} "
        f"{'reported':>8} {'median':>9} {'p99':>9} {'max':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        a = np.asarray(r.ratios or [np.nan])
        print(
            f"{r.adapter:10} {r.component:20} {r.dtype:8} {r.cases:6d} {r.false_alarms:5d} "
            f"{r.reported:8d} {np.median(a):9.2e} {np.quantile(a, 0.99):9.2e} {a.max():9.2e}"
        )
    alarms = sum(r.false_alarms for r in rows)
    print(
        f"\nfalse alarms: {alarms} in {sum(r.cases for r in rows)} cases "
        f"(reported torch findings apart: {sum(r.reported for r in rows)})"
    )
    for r in rows:
        if r.worst:
            print(f"  {r.adapter} {r.component} {r.dtype}: {r.worst[:300]}")
    return 1 if alarms else 0


# -- peers -----------------------------------------------------------------------------------------


def _baseline(component: str, native: dict[str, Any], g: Any) -> dict[str, Any]:
    """torch's own autograd in the dtype under test (SDPA math for attention)."""
    from transpec.adapters.torch.adapter import TorchAdapter, TorchMathAdapter

    adapter = TorchMathAdapter() if component == "attention" else TorchAdapter()
    fresh = {k: (v.detach().clone() if hasattr(v, "detach") else v) for k, v in native.items()}
    return dict(adapter.vjp(component, fresh, g))


def _ulp_floor(ref: Any, dtype: Any) -> float:
    import torch

    r = torch.as_tensor(ref).to(dtype)
    return float(((r + 0.3) - 0.3 - r).abs().max()) if r.numel() else 0.0


def _peer_case(entry: Any, dtype: str, args: dict[str, Any]) -> dict[str, bool | None]:
    import torch

    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
    from transpec.oracle.gradients.calls import assert_gradient, call_vjp, split_cotangent

    rest, g = split_cotangent(args)
    adapter = entry.make()
    harness = Harness(adapter, dtype, "cpu")
    verdict: dict[str, bool | None] = {}
    try:
        call = call_vjp(harness, entry.component, rest, g)
    except ImplementationFailure:
        return {"transpec": True, "assert_close": True, "fa_2x": True, "gradcheck": True}
    flagged = False
    for key in call.grads:
        try:
            assert_gradient(call, key)
        except PropertyViolation:
            flagged = True
    verdict["transpec"] = flagged
    tdt = adapter.to_native(np.zeros(1), dtype, "cpu").dtype
    native, _ = harness.round_inputs(entry.component, harness.encode(entry.component, rest))
    g_native = adapter.to_native(np.asarray(g), dtype, "cpu")
    base = _baseline(entry.component, native, g_native)
    close = fa = False
    for key, got in call.grads.items():
        ref = call.reference.grads[key].value
        got_t = torch.as_tensor(got).to(tdt)
        try:
            torch.testing.assert_close(got_t, torch.as_tensor(ref).to(tdt), equal_nan=True)
        except AssertionError:
            close = True
        with np.errstate(invalid="ignore"):
            err = np.nanmax(np.abs(got - ref)) if got.size else 0.0
            base_err = (
                np.nanmax(np.abs(adapter.from_native(base[key])[0] - ref)) if got.size else 0.0
            )
        if not err <= 2 * base_err + _ulp_floor(ref, tdt):
            fa = True
    verdict["assert_close"], verdict["fa_2x"] = close, fa
    verdict["gradcheck"] = _gradcheck(entry, native) if dtype == "float64" else None
    return verdict


def _gradcheck(entry: Any, native: dict[str, Any]) -> bool | None:
    """``torch.autograd.gradcheck`` of the entry's backward with respect to every gradient it
    has: its float array arguments and, for a layer, every parameter in ``params``."""
    import torch

    from transpec.adapters.torch.gradients import _DIFFERENTIATING
    from transpec.oracle import components

    record = components.get(entry.component)
    params = native.get("params") if record.takes_params else None
    params = dict(params) if isinstance(params, dict) else {}
    names = [
        n
        for n in record.gradients
        if isinstance(native.get(n, params.get(n)), torch.Tensor)
        and native.get(n, params.get(n)).is_floating_point()
    ]
    if sum(native.get(n, params.get(n)).numel() for n in names) > 600:
        return None  # finite differences over every element: too slow to be a peer here
    adapter = entry.make()
    fixed = {k: v for k, v in native.items() if k not in names}

    def fn(*tensors: Any) -> Any:
        given = dict(zip(names, tensors, strict=True))
        call = {**fixed, **{k: v for k, v in given.items() if k in native}}
        if params:
            call["params"] = {k: given.get(k, v) for k, v in params.items()}
        # as the adapter's own vjp calls it: a module-based layer then differentiates its call
        # on the given params (torch.func.functional_call) instead of copying them
        token = _DIFFERENTIATING.set(True)
        try:
            return getattr(adapter, record.method)(**call)
        finally:
            _DIFFERENTIATING.reset(token)

    inputs = tuple(native.get(n, params.get(n)).detach().clone().requires_grad_() for n in names)
    try:
        return not torch.autograd.gradcheck(fn, inputs, raise_exception=False)
    except Exception:
        return True


def _peers_job(job: tuple[str, str, int, int]) -> tuple[str, str, dict[str, list[bool]]]:
    import corpus

    name, dtype, cases, seed = job
    entry = corpus.entry(name)
    seen: dict[str, list[bool]] = {}

    def test(args: dict[str, Any]) -> None:
        for method, flagged in _peer_case(entry, dtype, args).items():
            if flagged is not None:
                seen.setdefault(method, []).append(flagged)

    _draw(entry.component, dtype, cases, seed, {}, test)
    return name, dtype, seen


def peers(args: argparse.Namespace) -> int:
    import corpus

    entries = [
        e
        for e in corpus.BACKWARD_CHAFFS + corpus.BACKWARD_WHEATS
        if args.entries == "all" or (e.component in LAYERS) == (args.entries == "layers")
    ]
    jobs = [
        (e.name, d, args.cases, args.seed)
        for e in entries
        for d in (e.visible if e.is_chaff else corpus.ALL_DTYPES)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_peers_job, jobs))
    methods = ("transpec", "assert_close", "fa_2x", "gradcheck")
    print(
        f"backward peers ({args.entries}): {args.cases} cases per entry and dtype, "
        f"seed {args.seed}, {time.perf_counter() - start:.0f} s\n"
    )
    head = f"{'entry':48} {'dtype':8} " + " ".join(f"{m:>12}" for m in methods)
    print(head)
    print("-" * len(head))
    totals = {kind: {m: [0, 0] for m in methods} for kind in ("chaff", "wheat")}
    for name, dtype, seen in results:
        kind = corpus.entry(name).kind
        cells = []
        for m in methods:
            flags = seen.get(m)
            if not flags:
                cells.append(f"{'n/a':>12}")
                continue
            cells.append(f"{sum(flags):>5}/{len(flags):<6}")
            hit = any(flags)
            totals[kind][m][0] += hit
            totals[kind][m][1] += 1
        print(f"{name:48} {dtype:8} " + " ".join(cells))
    print()
    for kind, what in (
        ("chaff", "chaff x dtype pairs killed"),
        ("wheat", "wheat x dtype pairs flagged (false alarms)"),
    ):
        print(
            f"{what}: "
            + ", ".join(f"{m} {totals[kind][m][0]}/{totals[kind][m][1]}" for m in methods)
        )
    return 0


# -- layer bounds before and after ---------------------------------------------------------------


def _module_at(revision: str, path: str) -> Any:
    """The module ``path`` of this repository as it was at git ``revision``, imported apart."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    name = f"_at_{revision.replace('/', '_').replace('~', '_')}_{Path(path).stem}"
    target = Path(tempfile.mkdtemp()) / f"{name}.py"
    target.write_text(text)
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bounds_job(job: tuple[str, str, int, int, str]) -> tuple[str, str, dict[str, list[float]]]:
    """Every gradient ratio |error|/bound of ``cases`` torch backward calls of one layer and
    dtype, under the layer rule at ``revision`` ("before") and the working tree's ("after"):
    the same calls, the same references, only the rule differs."""
    from transpec.adapters.registry import load_adapter
    from transpec.oracle import components
    from transpec.oracle.engine.compare import compare
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.gradients.calls import call_vjp, split_cotangent
    from transpec.oracle.gradients.tolerance import tolerances

    layer, dtype, cases, seed, revision = job
    old = _module_at(revision, "oracle/gradients/layers.py")
    adapter = load_adapter("torch")
    harness = Harness(adapter, dtype, "cpu")
    record = components.get(layer)
    ratios: dict[str, list[float]] = {
        "before": [],
        "after": [],
        "before_alarms": [],
        "after_alarms": [],
    }

    def test(args: dict[str, Any]) -> None:
        rest, g = split_cotangent(args)
        call = call_vjp(harness, layer, rest, g)
        new_rule = record.hook("vjp_rule")
        record._cache["hook:vjp_rule"] = old.layer_rules  # the rule at the revision, once
        try:
            before = tolerances(
                call.reference,
                dtype,
                adapter.precision(layer, dtype),
                adapter.backward_precision(layer, dtype),
            )
        finally:
            record._cache["hook:vjp_rule"] = new_rule
        for key, got in call.grads.items():
            if reported("torch", layer, key, dtype) or not got.size:
                continue
            ref = call.reference.grads[key]
            for side, tol in (("before", before[key]), ("after", call.tolerances[key])):
                result = compare(got, ref, tol)
                ratios[side].append(float(result.ratio))
                ratios[f"{side}_alarms"].append(float(not result.passed))

    _draw(layer, dtype, cases, seed, {}, test)
    return layer, dtype, ratios


def layer_bounds(args: argparse.Namespace) -> int:
    """The layer gradient ratios under the rule at ``--against`` and the working tree's, side
    by side on the same torch calls (every gradient of every call; the reported LayerNorm
    bias-sum finding left out)."""
    from transpec.adapters.registry import load_adapter

    dtypes = load_adapter("torch").dtypes
    jobs = [(layer, d, args.cases, args.seed, args.against) for layer in LAYERS for d in dtypes]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_bounds_job, jobs))
    print(
        f"layer gradient ratios, rule at {args.against} (before) and now (after): "
        f"{args.cases} torch calls per layer and dtype, seed {args.seed}, "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    head = (
        f"{'layer':20} {'dtype':8} {'grads':>6} | {'before median':>13} {'p99':>8} {'max':>8} "
        f"{'alarms':>6} | {'after median':>12} {'p99':>8} {'max':>8} {'alarms':>6} | "
        f"{'median x':>8}"
    )
    print(head)
    print("-" * len(head))
    alarms = 0
    for layer, dtype, r in results:
        b, a = np.asarray(r["before"] or [np.nan]), np.asarray(r["after"] or [np.nan])
        gain = np.median(a) / np.median(b) if np.median(b) > 0 else np.nan
        alarms += int(sum(r["after_alarms"]))
        print(
            f"{layer:20} {dtype:8} {len(r['after']):6d} | {np.median(b):13.2e} "
            f"{np.quantile(b, 0.99):8.2e} {b.max():8.2e} {int(sum(r['before_alarms'])):6d} | "
            f"{np.median(a):12.2e} {np.quantile(a, 0.99):8.2e} {a.max():8.2e} "
            f"{int(sum(r['after_alarms'])):6d} | {gain:8.1f}"
        )
    print(f"\nfalse alarms under the rule now: {alarms}")
    return 1 if alarms else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate")
    cal.add_argument("--cases", type=int, default=10_000, help="per adapter and dtype")
    cal.add_argument(
        "--layer-cases",
        type=int,
        default=0,
        help="per layer and dtype, on every adapter providing the layer's gradients (0: none)",
    )
    cal.add_argument("--jobs", type=int, default=2)
    cal.add_argument("--seed", type=int, default=20261)
    cal.add_argument("--chunks", type=int, default=1, help="runs of --cases, seeds seed+k")
    cal.add_argument("--out", default="", metavar="DIR", help="save each row as JSON in DIR")
    cal.add_argument("--merge", nargs="+", default=[], metavar="DIR", help="table of saved rows")
    cal.add_argument(
        "--only", default="", help="adapter:component:dtype globs, comma-separated (torch-math:*:*)"
    )
    peer = sub.add_parser("peers")
    peer.add_argument("--cases", type=int, default=6, help="per entry and dtype")
    peer.add_argument("--jobs", type=int, default=2)
    peer.add_argument("--seed", type=int, default=20262)
    peer.add_argument(
        "--entries",
        choices=("all", "kernels", "layers"),
        default="all",
        help="the backward corpus's kernel entries, its layer entries, or both",
    )
    bounds = sub.add_parser("layer-bounds")
    bounds.add_argument("--against", default="main", help="git revision of the rule before")
    bounds.add_argument("--cases", type=int, default=40, help="per layer and dtype")
    bounds.add_argument("--jobs", type=int, default=2)
    bounds.add_argument("--seed", type=int, default=20263)
    args = parser.parse_args(argv)
    if args.command == "layer-bounds":
        return layer_bounds(args)
    return calibrate(args) if args.command == "calibrate" else peers(args)


if __name__ == "__main__":
    raise SystemExit(main())
