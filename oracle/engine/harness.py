"""Calling an implementation under test: rounding, time limits, output checks, the reference.

A property never calls an adapter directly. It hands a component's arguments (float64 or bool
NumPy arrays and plain Python values, keyed by the adapter method's parameters, whose kinds the
component's registry record gives: :mod:`transpec.oracle.components`) to a :class:`Harness`,
which

1. encodes boolean attention masks for the adapter: the arguments a property builds use
   transpec's canonical meaning (``True`` = attend); an adapter that declares
   ``bool_mask="ignore"`` receives ``~mask``;
2. converts a fresh copy of every array with ``adapter.to_native`` (which rounds floats to the
   dtype under test) and converts the native inputs back with ``adapter.from_native``, so that
   the float64 copies it keeps are *exactly* what the implementation received (boolean masks
   stay boolean). Those copies are its own and read-only: nothing the implementation can reach
   aliases them (a NumPy ``to_native`` may return a view of what it is given; it is given a
   throwaway copy), and the ``params`` dict it receives is a new dict of new arrays;
3. computes the float64 reference and the tolerance on those copies, before the call, under
   the conventions snapshot taken when the harness was made
   (:class:`~transpec.adapters.base.Declared`; :func:`transpec.oracle.reference.compute`);
4. calls the component in a daemon thread and waits at most ``call_timeout`` seconds (from the
   same snapshot);
5. checks the result: an exception is an :class:`ImplementationFailure` of kind ``"raised"``,
   a hang ``"hung"``; adapter conventions that differ from the snapshot after the call
   ``"changed_conventions"``; an input that reads back (``from_native``, ``to_numpy``)
   different, bit for bit (NaN-aware), from what was sent ``"mutated_input"`` (the same for a
   ``params`` entry replaced, added or removed); anything but a native array ``"not_array"``,
   a native array of another dtype ``"dtype"`` and of another shape than the reference
   ``"shape"``.

NaN or infinity where the reference has none is *not* an implementation failure: the array is
returned and judged by :func:`transpec.oracle.engine.compare.compare` (a property violation),
because NaN and infinity positions are part of the answer (they must match the reference exactly).

Metamorphic properties call the implementation several times on related inputs; each call is a
:class:`Call` with its own reference and tolerance, and :func:`assert_related` checks a relation
between two outputs against the bound that the two tolerances imply.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from transpec.adapters.base import Adapter, Declared, Precision
from transpec.oracle import components as registry
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.engine.error_model import U64
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation, Worst
from transpec.oracle.engine.picture import Evidence
from transpec.spec.conventions import Conventions

if TYPE_CHECKING:
    from transpec.oracle.engine.isolation import PendingCall, Worker
    from transpec.oracle.kernels.reference import Reference
    from transpec.oracle.kernels.tolerance import Tolerance


@dataclass(frozen=True)
class Call:
    """One call of the implementation and everything needed to judge it.

    ``output``: the implementation's result as float64 (shape and dtype already checked);
    ``inputs``: the arguments after rounding to the dtype under test, as float64 (bool masks
    unchanged), in transpec's canonical mask meaning -- what properties reason about;
    ``sent``: the same values as the implementation received them (a boolean mask inverted for
    ``bool_mask="ignore"`` adapters) -- what the reference was computed on;
    ``reference``: the float64 reference on ``sent`` under the adapter's conventions.
    """

    component: str
    output: np.ndarray
    inputs: dict[str, Any]
    sent: dict[str, Any]
    reference: Reference
    tolerance: Tolerance = field(repr=False)


def accepts_argument(function: Any, name: str) -> bool:
    """True when ``function`` can be called with the keyword argument ``name`` (a parameter of
    that name, or ``**kwargs``); True as well when its signature cannot be read."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )


#: the longest message of an implementation kept whole (a guard against a hostile exception
#: carrying megabytes; libraries' own messages, whose useful part is often at the end, fit)
MESSAGE_LIMIT = 64 * 1024


def _one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), whole up to ``limit`` characters; reports
    wrap it for reading, never cut it."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _frozen(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only (the harness's own copies: nothing may write to them)."""
    array.setflags(write=False)
    return array


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, dict):  # a layer's parameter dict (its class kept)
        out = value.copy()
        for key, item in value.items():
            out[key] = _copy_value(item)
        return out
    if isinstance(value, Mapping):
        return {key: _copy_value(item) for key, item in value.items()}
    return value


def copy_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    """Writable copies of the arrays of ``args`` (and of the arrays of its dicts): what the
    adapter's own hooks (``supports``, ``layer_semantics``) are handed, so that they cannot
    edit what the harness judges by."""
    return {key: _copy_value(value) for key, value in args.items()}


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _difference(before: np.ndarray, after: np.ndarray, *, exact: bool) -> str | None:
    """How ``after`` differs from ``before`` (shape, dtype, elements), or None when they are
    the same bit for bit (floats: every NaN equals every NaN, -0.0 differs from 0.0)."""
    if tuple(after.shape) != tuple(before.shape):
        return f"its shape changed from {tuple(before.shape)} to {tuple(after.shape)}"
    if exact:
        if after.dtype != before.dtype:
            return f"its dtype changed from {before.dtype} to {after.dtype}"
        changed = int(np.count_nonzero(after != before))
    else:
        a = np.ascontiguousarray(after, dtype=np.float64)
        b = np.ascontiguousarray(before, dtype=np.float64)
        same = (a.view(np.uint64) == b.view(np.uint64)) | (np.isnan(a) & np.isnan(b))
        changed = int(a.size - np.count_nonzero(same))
    return f"{_count(changed, 'element')} changed" if changed else None


class _Watch:
    """The native inputs of one call and what they held when sent, to check after the call
    that the implementation left them alone (:meth:`untouched`)."""

    def __init__(self) -> None:
        #: (label, native array, what it read back as before the call, bool/integer?)
        self.arrays: list[tuple[str, Any, np.ndarray, bool]] = []
        #: (argument name, the dict object sent, its (key, native entry) pairs as sent)
        self.dicts: list[tuple[str, dict[str, Any], tuple[tuple[str, Any], ...]]] = []

    def floating(self, label: str, native: Any, before: np.ndarray) -> None:
        """A float input; ``before`` is the harness's float64 copy of what it holds."""
        self.arrays.append((label, native, before, False))

    def exact(self, component: str, label: str, native: Any, adapter: Adapter) -> None:
        """A boolean or integer input, read back now with ``adapter.to_numpy``."""
        try:
            before = _frozen(np.array(adapter.to_numpy(native)))
        except Exception as exc:
            raise ImplementationFailure(
                "raised",
                _one_line(
                    f"{component}: the adapter's to_numpy cannot read its own input {label} "
                    f"({type(exc).__name__}: {exc}); override Adapter.to_numpy for this "
                    "framework"
                ),
            ) from None
        self.arrays.append((label, native, before, True))

    def entries(self, name: str, sent: dict[str, Any]) -> None:
        """A dict argument (``params``): its entries must still be the arrays sent."""
        self.dicts.append((name, sent, tuple(sent.items())))

    def untouched(self, component: str, adapter: Adapter) -> None:
        """:class:`ImplementationFailure` ``"mutated_input"`` naming the first input that no
        longer reads back as it was sent (a dict entry replaced, added or removed; an array
        changed in place, reshaped, or no longer readable)."""
        for name, sent, entries in self.dicts:
            problem = _dict_change(sent, entries)
            if problem:
                raise ImplementationFailure(
                    "mutated_input", f"{component} modified its input {name} ({problem})"
                )
        for label, native, before, exact in self.arrays:
            try:
                if exact:
                    after = np.asarray(adapter.to_numpy(native))
                else:
                    after = np.asarray(adapter.from_native(native)[0], dtype=np.float64)
            except Exception as exc:
                raise ImplementationFailure(
                    "mutated_input",
                    _one_line(
                        f"{component} modified its input {label} in place: it no longer reads "
                        f"back ({type(exc).__name__}: {exc})"
                    ),
                ) from None
            problem = _difference(before, after, exact=exact)
            if problem:
                raise ImplementationFailure(
                    "mutated_input", f"{component} modified its input {label} in place ({problem})"
                )


def _dict_change(sent: dict[str, Any], entries: tuple[tuple[str, Any], ...]) -> str | None:
    """What became of a dict argument's entries since it was sent, or None."""
    keys = [key for key, _ in entries]
    now = list(sent.keys())
    removed = [k for k in keys if k not in sent]
    added = [k for k in now if k not in dict(entries)]
    if removed:
        return f"{_count(len(removed), 'entry')} removed: {', '.join(map(repr, removed[:3]))}"
    if added:
        return f"{_count(len(added), 'entry')} added: {', '.join(map(repr, added[:3]))}"
    replaced = [key for key, value in entries if sent[key] is not value]
    if replaced:
        return f"{_count(len(replaced), 'entry')} replaced: {', '.join(map(repr, replaced[:3]))}"
    return None


def _frozen_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every array (and every array of a dict value) read-only."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, np.ndarray):
            value = _frozen(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, np.ndarray):
                    _frozen(item)
        out[key] = value
    return out


def _full_shape(reference: Reference) -> tuple[int, ...]:
    """The shape the implementation must return: the whole output, also when only some rows
    of it are judged (``reference.rows``)."""
    return tuple(reference.full_shape or np.shape(reference.value))


def check_shape(component: str, output: np.ndarray, shape: tuple[int, ...]) -> None:
    """:class:`ImplementationFailure` ``"shape"`` unless ``output`` has the reference's shape."""
    if tuple(output.shape) != tuple(shape):
        raise ImplementationFailure(
            "shape", f"{component} returned shape {tuple(output.shape)}, expected {tuple(shape)}"
        )


def _convention_change(snapshot: Conventions, current: Any) -> str:
    """The fields in which ``current`` differs from ``snapshot`` (``name: old -> new``), or ""."""
    if not isinstance(current, Conventions):
        return f"replaced by a {type(current).__name__}"
    changes = []
    for f in dataclasses.fields(snapshot):
        old, new = getattr(snapshot, f.name), getattr(current, f.name, None)
        if type(old) is not type(new) or old != new:
            changes.append(f"{f.name}: {old!r} -> {new!r}")
    return "; ".join(changes)


def scalar_attributes(args: Mapping[str, Any], conventions: Conventions) -> Mapping[str, Any]:
    """``args`` with the scalar attributes (``eps``, ``scale``, ``softcap``) as the
    implementation uses them: rounded to float32 under ``scalar_attributes="float32"``
    (ONNX's float attributes), as given otherwise (the same mapping). Under float32 attributes
    attention's default scale (``scale=None``) is the float32 value of 1/sqrt(E) too: the
    attribute's default, computed in its type."""
    from transpec.spec.conventions import SCALAR_ATTRIBUTE_ARGUMENTS

    if conventions.scalar_attributes == "exact":
        return args
    out = dict(args)
    if "scale" in out and out["scale"] is None and "q" in out:
        out["scale"] = float(np.float32(1.0) / np.sqrt(np.float32(np.shape(out["q"])[-1])))
    for name in SCALAR_ATTRIBUTE_ARGUMENTS:
        value = out.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(np.float32(value))
    return out


#: how many (reference, tolerance) pairs :meth:`Harness.judging` keeps: the slow path of
#: ``fast_slow_agreement`` and Hypothesis's replays of an input judge the same inputs again
JUDGED_MEMO_SIZE = 8
_JUDGED: OrderedDict[bytes, tuple[Reference, Tolerance]] = OrderedDict()
_JUDGED_LOCK = threading.Lock()


def _digest_value(h: Any, value: Any) -> None:
    """Feed ``value`` (arrays, dicts of them, plain values) to the hash ``h``, unambiguously."""
    if isinstance(value, np.ndarray):
        h.update(f"a{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
    elif isinstance(value, Mapping):
        h.update(f"d{len(value)}".encode())
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _digest_value(h, value[key])
    else:
        text = repr(value)
        h.update(f"v{type(value).__name__}{len(text)}:{text}".encode())


def judged_key(*parts: Any) -> bytes:
    """A digest of everything a reference and its tolerance are computed from."""
    import hashlib

    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        _digest_value(h, part)
    return h.digest()


class _DedicatedThread:
    """One daemon thread that runs every call of one adapter, in order (an adapter's
    ``dedicated_thread = True``): for libraries whose state is bound to the thread that made it
    (a kernel cache, a context). A call that hangs keeps the thread: the next call gets a new
    worker (the hung one's thread-bound state is lost with it)."""

    def __init__(self, name: str) -> None:
        import queue

        self._jobs: queue.Queue[tuple[Any, threading.Event]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.stuck = False

    def _serve(self) -> None:
        while True:
            job, finished = self._jobs.get()
            job()
            finished.set()

    def run(self, job: Any, timeout: float | None) -> bool:
        """Run ``job`` on the worker's thread; False when it did not finish within
        ``timeout`` seconds (the worker is then stuck; None: wait as long as it takes)."""
        finished = threading.Event()
        self._jobs.put((job, finished))
        if finished.wait(timeout):
            return True
        self.stuck = True
        return False


#: adapter id -> its worker thread (``dedicated_thread`` adapters)
_DEDICATED_THREADS: dict[int, tuple[Any, _DedicatedThread]] = {}
_DEDICATED_THREADS_LOCK = threading.Lock()


def _dedicated_thread_of(adapter: Adapter) -> _DedicatedThread:
    """The dedicated worker of ``adapter``, started on its first call (a new one once the
    previous one is stuck in a hung call)."""
    with _DEDICATED_THREADS_LOCK:
        entry = _DEDICATED_THREADS.get(id(adapter))
        if entry is None or entry[0] is not adapter or entry[1].stuck:
            entry = (adapter, _DedicatedThread(f"transpec-{adapter.name}-thread"))
            _DEDICATED_THREADS[id(adapter)] = entry
        return entry[1]


class Harness:
    """Calls one adapter's components in one dtype on one device and judges what comes back.

    >>> harness = Harness(NumpyAdapter(), "float16")           # doctest: +SKIP
    >>> call = harness.call("softmax", {"x": x, "dim": -1})   # doctest: +SKIP
    >>> harness.assert_equivalent(call)                        # doctest: +SKIP
    """

    def __init__(
        self,
        adapter: Adapter,
        dtype: str,
        device: str = "cpu",
        *,
        declared: Declared | None = None,
        worker: Worker | None = None,
        path: str = "default",
    ) -> None:
        """``declared``: the conventions and time limit to judge under (a run passes the one
        snapshot it took when it began); by default a snapshot of ``adapter``'s, taken now.
        :class:`~transpec.errors.AdapterDeclarationError` when they are unusable.

        ``worker``: run the implementation in this worker process
        (:mod:`transpec.oracle.engine.isolation`) instead of in this one; ``adapter`` then
        answers the declarations only (precision, ``supports``, ``layer_semantics``, ...), and
        the worker's own copy of it, loaded from the same spec, is called. ``path``:
        ``"default"``, or ``"slow"`` for the adapter's slow path (:meth:`slow_path`)."""
        if not isinstance(adapter, Adapter):
            raise TypeError(f"adapter must be a transpec Adapter, got {type(adapter).__name__}")
        self.adapter = adapter
        self.dtype = canonical_dtype(dtype)
        self.device = str(device)
        self.declared = declared if declared is not None else Declared.of(adapter)
        #: the conventions every call is judged under (a copy: the adapter cannot edit it)
        self.conventions = self.declared.conventions.for_dtype(self.dtype)
        self.worker = worker
        self.path = path
        #: examples discarded because ``supports()`` rejected them, and the last reason given
        self.rejected = 0
        self.rejection: str | None = None
        #: calls judged on sampled rows, and which rows the last of them judged (in words)
        self.sampled_calls = 0
        self.sampled_rows: str | None = None

    def slow_path(self) -> Harness | None:
        """A harness of the adapter's slow path (``slow_path_adapter()``, for
        ``fast_slow_agreement``) in the same dtype and device, judged under this harness's
        declarations snapshot and run in the same worker; None when the adapter has one path."""
        slow = self.adapter.slow_path_adapter()
        if slow is None:
            return None
        return Harness(
            slow, self.dtype, self.device, declared=self.declared, worker=self.worker, path="slow"
        )

    def __repr__(self) -> str:
        return f"Harness({self.adapter.name!r}, {self.dtype!r}, {self.device!r})"

    # -- declarations --------------------------------------------------------------------------

    def precision(self, component: str) -> Precision:
        """The adapter's declared precision for ``component`` in the dtype under test."""
        return self.adapter.precision(component, self.dtype)

    def tolerance(self, component: str, reference: Reference) -> Tolerance:
        """The per-element bound of the tolerance model for ``reference`` in this dtype (under
        the ``flush_subnormals`` convention, the flushed formats' underflow floor is their
        smallest normal: :class:`~transpec.oracle.engine.error_model.Flushing`)."""
        record = registry.get(component)
        precision: Any = self.precision(component)
        if self.conventions.flush_subnormals:
            from transpec.oracle.engine.error_model import Flushing

            precision = Flushing(precision, self.conventions.flush_subnormals)
        return record.compute_tolerance(reference, self.dtype, precision)

    def gqa_support(self) -> str | None:
        """None when the adapter is judged on grouped-query attention (``enable_gqa=True`` with
        Hq != Hkv), else why not.

        Declared, never probed: GQA support is assumed when the adapter's attention method
        accepts ``enable_gqa`` (a parameter of that name or ``**kwargs``), unless the adapter
        declares ``supports_gqa = False`` (:class:`~transpec.adapters.base.Adapter`). A method
        that then raises on grouped input fails the property that drew it, like any other
        raise; a probe that took such a raise for "unsupported" would hide exactly that bug.
        """
        if self.adapter.supports_gqa is False:
            return f"{self.adapter.name} declares supports_gqa = False"
        method = getattr(self.adapter, registry.get("attention").method, None)
        if method is not None and not accepts_argument(method, "enable_gqa"):
            return f"{self.adapter.name}'s attention method takes no enable_gqa argument"
        return None

    def require_supported(self, component: str, args: Mapping[str, Any]) -> None:
        """Discard the example when the adapter declares, through an optional
        ``supports(component, args, dtype=, device=)`` method, that it rejects these arguments
        by design (e.g. a kernel without ``Ev != E``): neither a failure nor a pass.

        Inside a Hypothesis test this is ``hypothesis.reject()``; outside one (a replay) it is
        a ``ValueError`` naming the reason.
        """
        reason = self.adapter.supports(
            component, copy_arguments(args), dtype=self.dtype, device=self.device
        )
        if reason is None:
            reason = self._softcap_support(component, args)
        if reason is None:
            return
        self.rejected += 1
        self.rejection = str(reason)
        from hypothesis import reject
        from hypothesis.control import currently_in_test_context

        if currently_in_test_context():
            reject()
        raise ValueError(f"{self.adapter.name} does not take these {component} arguments: {reason}")

    def _softcap_support(self, component: str, args: Mapping[str, Any]) -> str | None:
        """Why a drawn ``softcap`` cannot be passed: the component's method takes no such
        argument (a parameter of that name or ``**kwargs``). ``softcap`` is only in the
        arguments when a property drew one, so a method without it is judged on the rest."""
        if args.get("softcap") is None:
            return None
        method = getattr(self.adapter, registry.get(component).method, None)
        if method is not None and not accepts_argument(method, "softcap"):
            return f"{self.adapter.name}'s {component} method takes no softcap argument"
        return None

    def lower_gqa(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Attention arguments with grouped K/V repeated per the declared ``gqa_mapping`` and
        ``enable_gqa=False`` -- the same semantics, for adapters without GQA support."""
        out = dict(args)
        q, k = np.asarray(args["q"]), np.asarray(args["k"])
        if q.ndim < 3 or q.shape[-3] == k.shape[-3]:
            return out
        groups = q.shape[-3] // k.shape[-3]
        for name in ("k", "v"):
            x = np.asarray(args[name])
            if self.conventions.gqa_mapping == "interleave":
                out[name] = np.repeat(x, groups, axis=-3)
            else:
                reps = [1] * x.ndim
                reps[-3] = groups
                out[name] = np.tile(x, reps)
        out["enable_gqa"] = False
        return out

    def _regroup(self, rounded: Mapping[str, Any], kv_heads: int) -> dict[str, Any]:
        """Inverse of :meth:`lower_gqa` on rounded arguments: K/V back to their ``kv_heads``
        heads (rounding is elementwise, so these are exactly the grouped K/V rounded) and
        ``enable_gqa=True``."""
        out = dict(rounded)
        for name in ("k", "v"):
            x = np.asarray(rounded[name])
            groups = x.shape[-3] // kv_heads
            if self.conventions.gqa_mapping == "interleave":
                out[name] = np.take(x, np.arange(0, x.shape[-3], groups), axis=-3)
            else:
                out[name] = np.take(x, np.arange(kv_heads), axis=-3)
        out["enable_gqa"] = True
        return out

    # -- inputs --------------------------------------------------------------------------------

    def encode(self, component: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments in the adapter's declared meaning (boolean masks per ``bool_mask``)."""
        sent = dict(args)
        if self.conventions.bool_mask != "ignore":
            return sent
        for name in registry.get(component).arguments_of("mask"):
            mask = sent.get(name)
            if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
                sent[name] = ~mask
        return sent

    def round_inputs(
        self, component: str, args: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(native arguments, their float64/bool copies as the implementation will see them).

        Float arrays go through ``adapter.to_native`` (which rounds to the dtype under test) and
        back through ``adapter.from_native``; boolean arrays stay boolean; integer index arrays
        (argument kind ``"index"``) go through ``adapter.index_to_native`` unrounded; plain
        Python values (lengths, offsets, flags) pass through. Every native array is converted
        from a fresh copy, and every copy kept is the harness's own and read-only.
        """
        native, rounded, _ = self._prepare(component, args)
        return native, rounded

    def round_params(
        self, component: str, name: str, params: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A dict of parameter arrays -> (native arrays, their float64 copies as sent): every
        float array is rounded to the dtype under test like any input; None entries stay."""
        native, rounded = self._prepare_params(component, name, params, _Watch())
        return native, rounded

    def _prepare(
        self, component: str, args: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], _Watch]:
        """:meth:`round_inputs`, and what to read back after the call (:meth:`_untouched`)."""
        record = registry.get(component)
        unknown = sorted(set(args) - set(record.argument_names))
        if unknown:
            raise ValueError(f"unknown argument(s) of {component}: {', '.join(unknown)}")
        params = record.arguments_of("params")
        indices = record.arguments_of("index")
        arrays = record.arguments_of("array", "mask", "layer_mask")
        watch = _Watch()
        native: dict[str, Any] = {}
        rounded: dict[str, Any] = {}
        for name, value in args.items():
            if name in params and value is not None:
                native[name], rounded[name] = self._prepare_params(component, name, value, watch)
                continue
            if name in indices and value is not None:
                index = np.asarray(value)
                if index.dtype == np.bool_ or not np.issubdtype(index.dtype, np.integer):
                    raise TypeError(f"{component} argument {name} must be an integer array")
                rounded[name] = _frozen(np.array(index, dtype=np.int64))
                nat = self.adapter.index_to_native(np.array(index, copy=True), self.device)
                native[name] = nat
                watch.exact(component, name, nat, self.adapter)
            elif name in arrays and value is not None:
                arr = np.asarray(value)
                if arr.dtype == np.bool_:
                    rounded[name] = _frozen(np.array(arr, dtype=np.bool_))
                    nat = self.adapter.to_native(
                        np.array(arr, dtype=np.bool_), self.dtype, self.device
                    )
                    native[name] = nat
                    watch.exact(component, name, nat, self.adapter)
                else:
                    native[name], rounded[name] = self._prepare_float(name, arr, watch)
            else:
                native[name] = value
                rounded[name] = value
        return native, rounded, watch

    def _prepare_params(
        self, component: str, name: str, params: Any, watch: _Watch
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{component} argument {name} must be a dict of arrays, got {type(params).__name__}"
            )
        native: dict[str, Any] = {}
        rounded: dict[str, Any] = {}
        for key, value in params.items():
            if value is None:
                native[key] = rounded[key] = None
                continue
            arr = np.asarray(value)
            if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
                raise TypeError(f"{component} parameter {key!r} must be a float array")
            native[key], rounded[key] = self._prepare_float(f"{name}[{key!r}]", arr, watch)
        watch.entries(name, native)
        return native, rounded

    def _prepare_float(
        self, label: str, array: np.ndarray, watch: _Watch
    ) -> tuple[Any, np.ndarray]:
        """(native array, read-only float64 copy of what it holds) for one float input.

        ``to_native`` gets a throwaway float64 copy (it may return a view of it: a NumPy
        adapter in float64 does), and what ``from_native`` gives back is copied again, so the
        harness's copy shares memory with nothing the implementation can reach."""
        fresh = np.array(array, dtype=np.float64)
        nat = self.adapter.to_native(fresh, self.dtype, self.device)
        back, _ = self.adapter.from_native(nat)
        before = _frozen(np.array(back, dtype=np.float64))
        watch.floating(label, nat, before)
        return nat, before.reshape(fresh.shape)

    def decode(self, component: str, sent: Mapping[str, Any]) -> dict[str, Any]:
        """Inverse of :meth:`encode`: the canonical meaning of arguments as sent."""
        return self.encode(component, sent)  # inverting a boolean mask is its own inverse

    # -- calling -------------------------------------------------------------------------------

    def invoke(self, component: str, native: Mapping[str, Any], *, limited: bool = True) -> Any:
        """Call the component on native arguments under the declared ``call_timeout``
        (:meth:`run_limited`); returns the raw result."""
        method_name = registry.get(component).method
        if not self.adapter.provides(component):
            raise ValueError(f"adapter {self.adapter.name!r} does not provide {component!r}")
        method = getattr(self.adapter, method_name)
        return self.run_limited(component, lambda: method(**native), limited=limited)

    def run_limited(
        self, label: str, call: Callable[[], Any], *, limited: bool = True, prefix: str = ""
    ) -> Any:
        """``call()`` (one call of the implementation, then the device synchronized) in a new
        daemon thread under the declared ``call_timeout``.

        Raises :class:`ImplementationFailure` ``"raised"`` (chained to what was raised, its
        message after ``prefix``) or ``"hung"`` (naming ``label``); returns the raw result. The
        call runs in a new thread in both isolation modes, so that an implementation sees the
        same thread-local state either way; a hung call keeps running in its thread and the run
        goes on without it. ``limited=False``: wait for the thread without a time limit (in a
        worker process, whose time limit the parent enforces by killing it).

        Thread model: every call runs in a new daemon thread (so that a hang can be timed out),
        never in the thread that made the adapter. An adapter that declares
        ``dedicated_thread = True`` gets one worker thread instead, which runs all its calls in
        order (:class:`_DedicatedThread`), for libraries whose state is bound to a thread.
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                result = call()
                self.adapter.synchronize(self.device)
                box["result"] = result
            except BaseException as exc:  # reported, never re-raised in this thread
                box["error"] = exc

        timeout = self.declared.call_timeout
        limit = timeout if limited else None
        if getattr(self.adapter, "dedicated_thread", False) is True:
            done = _dedicated_thread_of(self.adapter).run(target, limit)
        else:
            thread = threading.Thread(
                target=target, name=f"transpec-{self.adapter.name}-{label}", daemon=True
            )
            thread.start()
            thread.join(limit)
            done = not thread.is_alive()
        if not done:
            raise ImplementationFailure(
                "hung", f"{label} did not return within {timeout:g} s (call_timeout)"
            )
        if "error" in box:
            exc = box["error"]
            raise ImplementationFailure(
                "raised", _one_line(f"{prefix}{type(exc).__name__}: {exc}")
            ) from exc
        return box.get("result")

    def check_conventions(self, component: str) -> None:
        """:class:`ImplementationFailure` ``"changed_conventions"`` when the adapter's
        ``conventions`` no longer equal the snapshot this harness judges under (the call
        assigned new ones, or edited the object in place); the verdicts still use the
        snapshot."""
        change = _convention_change(
            self.declared.conventions, getattr(self.adapter, "conventions", None)
        )
        if change:
            raise ImplementationFailure(
                "changed_conventions",
                f"{component}: the adapter's conventions changed after the run began "
                f"({change}); judged under the conventions declared when it began",
            )

    def convert_output(
        self, component: str, result: Any, shape: tuple[int, ...] | None
    ) -> np.ndarray:
        """Check a raw result (native array, dtype, shape) and return it as a float64 copy
        (``shape`` None: not checked here; :func:`check_shape` later)."""
        if not self.adapter.is_native(result):
            raise ImplementationFailure(
                "not_array",
                f"{component} returned {type(result).__name__}, not a "
                f"{self.adapter.framework} array",
            )
        try:
            out, out_dtype = self.adapter.from_native(result)
        except (TypeError, ValueError) as exc:
            raise ImplementationFailure(
                "dtype", _one_line(f"{component} returned an array that is not a float: {exc}")
            ) from None
        if out_dtype != self.dtype:
            raise ImplementationFailure(
                "dtype", f"{component} returned {out_dtype} for {self.dtype} inputs"
            )
        out = np.array(out, dtype=np.float64)  # a copy: the implementation may keep its result
        if shape is not None:
            check_shape(component, out, shape)
        return out

    def reference(self, component: str, sent: Mapping[str, Any], *, rows: Any = None) -> Reference:
        """The float64 reference on the arguments as sent, under the declared conventions.

        Layer components take the path-dependent semantics an adapter declares through an
        optional ``layer_semantics(component, args)`` (:meth:`Adapter.layer_semantics`), which
        is handed a copy of the arguments. ``rows``: the query rows to judge (attention:
        indices or ``"sampled"``; see :meth:`call`)."""
        record = registry.get(component)
        return record.compute_reference(
            scalar_attributes(sent, self.conventions),
            conventions=self.conventions,
            dtype=self.dtype,
            semantics=self._semantics(component, sent),
            rows=rows,
        )

    def _semantics(self, component: str, sent: Mapping[str, Any]) -> Any:
        if not registry.get(component).takes_params:
            return None
        return self.adapter.layer_semantics(component, copy_arguments(sent))

    def judging(
        self, component: str, sent: Mapping[str, Any], *, rows: Any = None
    ) -> tuple[Reference, Tolerance]:
        """(:meth:`reference`, :meth:`tolerance`) of the arguments as sent: the pair computed
        last time for the same component, dtype, conventions, semantics, rows, precision and
        arguments (bit for bit) when there was one among the last :data:`JUDGED_MEMO_SIZE`."""
        record = registry.get(component)
        semantics = self._semantics(component, sent)
        key = judged_key(
            component,
            self.dtype,
            self.conventions,
            semantics,
            rows,
            self.precision(component),
            dict(sent),
        )
        with _JUDGED_LOCK:
            found = _JUDGED.get(key)
            if found is not None:
                _JUDGED.move_to_end(key)
                return found
        reference = record.compute_reference(
            scalar_attributes(sent, self.conventions),
            conventions=self.conventions,
            dtype=self.dtype,
            semantics=semantics,
            rows=rows,
        )
        pair = (reference, self.tolerance(component, reference))
        with _JUDGED_LOCK:
            _JUDGED[key] = pair
            while len(_JUDGED) > JUDGED_MEMO_SIZE:
                _JUDGED.popitem(last=False)
        return pair

    def call(self, component: str, args: Mapping[str, Any], *, rows: Any = None) -> Call:
        """Round ``args`` (canonical meaning), call the implementation, check, add the reference.

        The reference and the tolerance are computed before the call, on the harness's own
        read-only copies of what is sent; after it, the adapter's conventions and every input
        are checked to be as they were (:meth:`check_conventions`, kinds
        ``"changed_conventions"`` and ``"mutated_input"``).

        Grouped-query arguments go to an adapter without GQA support (:meth:`gqa_support`) with
        K/V repeated per its declared mapping (same semantics; the ``gqa`` property is skipped
        for it); ``Call.inputs`` then still holds the grouped K/V (rounded), in the layout of
        ``args``, so that properties can reason in the layout they drew, while ``Call.sent``
        holds what the implementation received. ``enable_gqa`` is not passed at all to a
        method that takes no such argument. Raises :class:`ImplementationFailure` when no
        usable array comes back.

        ``rows`` (attention): judge only these query rows (indices, or ``"sampled"`` for the
        rows :func:`transpec.oracle.kernels.reference.sampled_rows` chooses; above
        :data:`~transpec.oracle.kernels.reference.SAMPLING_THRESHOLD` score elements the
        reference samples them by itself). The implementation still runs on the whole input and
        must return the whole output; ``Call.output`` then holds the judged rows, in the order
        of ``Call.reference.rows``.
        """
        record = registry.get(component)
        lowered = (
            record.groups_kv and bool(args.get("enable_gqa")) and self.gqa_support() is not None
        )
        kv_heads = int(np.shape(args["k"])[-3]) if lowered else 0
        if lowered:
            args = self.lower_gqa(args)
        self.require_supported(component, args)
        encoded = self.encode(component, args)
        drop = self._drops_enable_gqa(component, encoded)
        if self.worker is not None:
            from transpec.oracle.engine.dtypes import same_bits

            pending = self.worker.submit(
                path=self.path,
                component=component,
                dtype=self.dtype,
                device=self.device,
                declared=self.declared,
                encoded=encoded,
                drop_enable_gqa=drop,
            )
            # the reference and the tolerance are computed while the worker converts and calls:
            # on the arguments as the worker will report it sent them, when that can be told
            # here (kept only if the report is the same), else on its report
            guessed = self._judging_guess(pending, component, encoded, rows)
            sent = _frozen_values(pending.sent())
            try:
                reference, tol = (
                    guessed[1]
                    if guessed and same_bits(guessed[0], sent)
                    else self.judging(component, sent, rows=rows)
                )
            except KeyboardInterrupt:
                pending.abandon()
                raise
            except BaseException:
                pending.result()  # a failure of the call comes first, as when it was awaited
                raise
            _, output = pending.result()
            check_shape(component, output, _full_shape(reference))
        else:
            native, sent, watch = self._prepare(component, encoded)
            if drop:
                del native["enable_gqa"]
            reference, tol = self.judging(component, sent, rows=rows)
            result = self.invoke(component, native)
            self.check_conventions(component)
            watch.untouched(component, self.adapter)
            output = self.convert_output(component, result, _full_shape(reference))
        if reference.rows is not None:
            from transpec.oracle.kernels.rows import judged_part, row_count, summary

            output = judged_part(
                reference.row_layout, reference.rows, output, np.shape(reference.value)
            )
            total = row_count(
                reference.row_layout, _full_shape(reference), np.shape(reference.value)
            )
            self.sampled_calls += 1
            self.sampled_rows = summary(reference.row_layout, reference.rows, total)
        rounded = self.decode(component, sent)
        if lowered:
            rounded = self._regroup(rounded, kv_heads)
        rounded = _frozen_values(rounded)
        return Call(component, output, rounded, sent, reference, tol)

    def _judging_guess(
        self, pending: PendingCall, component: str, encoded: Mapping[str, Any], rows: Any
    ) -> tuple[dict[str, Any], tuple[Reference, Tolerance]] | None:
        """(the arguments the worker is expected to report it sent, :meth:`judging` of them)
        (:func:`~transpec.oracle.engine.isolation.expected_sent`); None when they cannot be told
        here or judging them raised (the report is then judged, and raises in its turn)."""
        from transpec.oracle.engine.isolation import expected_sent

        guess = expected_sent(component, encoded, self.dtype)
        if guess is None:
            return None
        guess = _frozen_values(guess)
        try:
            return guess, self.judging(component, guess, rows=rows)
        except KeyboardInterrupt:
            pending.abandon()
            raise
        except Exception:
            return None

    def _drops_enable_gqa(self, component: str, encoded: Mapping[str, Any]) -> bool:
        """Whether ``enable_gqa=False`` is left out of the call: the adapter's attention
        method takes no such argument (read from this process's adapter: a declaration)."""
        record = registry.get(component)
        if not (record.groups_kv and "enable_gqa" in encoded and not encoded["enable_gqa"]):
            return False
        method = getattr(self.adapter, record.method, None)
        return method is not None and not accepts_argument(method, "enable_gqa")

    def execute(
        self,
        component: str,
        encoded: Mapping[str, Any],
        *,
        drop_enable_gqa: bool = False,
        on_sent: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[dict[str, Any], np.ndarray]:
        """The worker process's side of :meth:`call`: (what was sent, as float64/bool copies;
        the output as float64) for arguments already in the adapter's declared meaning.

        Rounds and converts them, calls the implementation without a time limit (the parent
        enforces it), checks the conventions and the inputs after the call and converts the
        output; the parent computes the reference and the tolerance and checks the shape.
        ``on_sent`` is handed what was sent before the call (the worker reports it then)."""
        native, sent, watch = self._prepare(component, encoded)
        if on_sent is not None:
            on_sent(sent)
        if drop_enable_gqa:
            native.pop("enable_gqa", None)
        result = self.invoke(component, native, limited=False)
        self.check_conventions(component)
        watch.untouched(component, self.adapter)
        return sent, self.convert_output(component, result, None)

    # -- judging -------------------------------------------------------------------------------

    def assert_equivalent(self, call: Call, *, what: str = "") -> float:
        """Compare a call with its reference under its tolerance; the worst ratio (<= 1).

        Raises :class:`PropertyViolation` with the worst element when out of tolerance or when
        NaN/infinity positions differ from the reference's.
        """
        from transpec.oracle.engine.compare import compare

        result = compare(call.output, call.reference, call.tolerance)
        if not result.passed:
            prefix = f"{what}: " if what else ""
            worst, judged = result.worst, ""
            rows = call.reference.rows
            if rows is not None:
                from transpec.oracle.kernels.rows import compact, row_count, row_name, whole_index

                layout = call.reference.row_layout
                full = call.reference.full_shape or ()
                total = row_count(layout, full, np.shape(call.reference.value))
                judged = f" (judged {len(rows)} of {total} {row_name(layout)})"
                if worst is not None:
                    index = whole_index(layout, rows, tuple(worst.index), full)
                    worst = dataclasses.replace(
                        worst,
                        index=index,
                        derivation=f"{worst.derivation}; judged {row_name(layout)} {compact(rows)}",
                    )
            raise PropertyViolation(
                f"{prefix}{result.message}{judged}",
                worst=worst,
                ratio=float(result.ratio),
                details={
                    "nonfinite_mismatch": getattr(result, "nonfinite_mismatch", 0),
                    "judged_rows": None if rows is None else list(rows),
                },
                evidence=_evidence(call, result.worst, self.conventions),
            )
        return float(result.ratio)


def _evidence(call: Call, worst: Worst | None, conventions: Conventions) -> Evidence:
    """What the picture of a failed :meth:`Harness.assert_equivalent` needs (references only:
    :mod:`transpec.oracle.engine.picture`)."""
    return Evidence(
        call.output,
        np.asarray(call.reference.value),
        call.tolerance.bound,
        worst.index if worst is not None else (),
        args=call.sent,
        conventions=conventions,
        rows=call.reference.rows,
    )


def assert_related(
    actual: np.ndarray,
    expected: np.ndarray,
    bound: np.ndarray | float,
    *,
    what: str,
    derivation: str,
) -> float:
    """Check ``|actual - expected| <= bound`` elementwise, NaN/inf positions exactly equal.

    Used by metamorphic properties: ``actual`` is one output (or a combination of outputs),
    ``expected`` what the relation says it must equal, ``bound`` the bound derived from the
    tolerances of the calls involved. Returns the worst ratio error/bound; raises
    :class:`PropertyViolation` naming the worst element otherwise.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.broadcast_shapes(a.shape, e.shape))
    a, e = np.broadcast_arrays(a, e)
    if a.size == 0:
        return 0.0
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    mismatch = (nan_a != nan_e) | (inf_a != inf_e) | (inf_a & inf_e & (np.sign(a) != np.sign(e)))
    if mismatch.any():
        index = tuple(int(i) for i in np.argwhere(mismatch)[0])
        bound_here = float(b[index]) if np.isfinite(b[index]) else 0.0
        worst = Worst(
            index,
            float(a[index]),
            float(e[index]),
            float("inf"),
            bound_here,
            f"NaN/infinity positions must match exactly; {derivation}",
        )
        raise PropertyViolation(
            f"{what}: NaN/infinity at {int(mismatch.sum())} position(s) where the relation "
            "says otherwise",
            worst=worst,
            evidence=Evidence(a, e, b, index, note=f"the relation: {what}"),
        )
    from transpec.oracle.engine.compare import error_ratios

    err, ratio, index = error_ratios(a, e, b, np.isfinite(a) & np.isfinite(e))
    worst_ratio = float(ratio[index])
    if worst_ratio > 1.0:
        worst = Worst(
            index, float(a[index]), float(e[index]), float(err[index]), float(b[index]), derivation
        )
        evidence = Evidence(a, e, b, index, note=f"the relation: {what}")
        raise PropertyViolation(f"{what}: relation violated", worst=worst, evidence=evidence)
    return worst_ratio


def assert_relation(
    actual: np.ndarray,
    base: np.ndarray,
    ref_actual: np.ndarray,
    ref_base: np.ndarray,
    bound: np.ndarray,
    *,
    what: str,
    derivation: str,
) -> float:
    """Check ``actual ≈ base + (ref_actual - ref_base)`` within ``bound``.

    ``actual`` and ``base`` are outputs that the relation makes equal in exact arithmetic;
    ``ref_*`` their float64 references; ``bound`` the sum of the calls' tolerances. Since
    |a - r_a| <= b_a and |b - r_b| <= b_b for a correct implementation,
    |a - b - (r_a - r_b)| <= b_a + b_b: the references' own difference (the rounding of the
    transformed inputs to the dtype under test, eps effects, float64 noise; zero where the
    relation is exact) is subtracted, not tolerated. Non-finite references shift nothing.
    """
    r_a = np.asarray(ref_actual, dtype=np.float64)
    r_b = np.asarray(ref_base, dtype=np.float64)
    finite = np.isfinite(r_a) & np.isfinite(r_b)
    shift = np.where(finite, r_a - np.where(finite, r_b, 0.0), 0.0)
    expected = base + shift
    arithmetic = 2 * U64 * np.where(finite, np.abs(base) + np.abs(r_a) + np.abs(r_b), 0.0)
    return assert_related(
        actual,
        expected,
        bound + np.where(np.isfinite(arithmetic), arithmetic, 0.0),
        what=what,
        derivation=derivation,
    )


def bound_of(call: Call) -> np.ndarray:
    """The per-element bound of a call's tolerance, broadcast to its output's shape."""
    return np.broadcast_to(np.asarray(call.tolerance.bound, dtype=np.float64), call.output.shape)


#: the derivation of :func:`relate`: two calls whose exact outputs are equal
BOTH_TOLERANCES = "sum of both calls' tolerances (their references' difference subtracted)"


def relate(
    actual: Call,
    base: Call,
    *,
    what: str,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    rows: np.ndarray | None = None,
    why: str = "",
) -> float:
    """Check ``out(actual) ≈ T(out(base))`` for two calls whose exact outputs the relation
    makes equal after ``transform`` T (a slice, a permutation; the identity by default).

    That is :func:`assert_relation` with expected ``T(out_base) + (r_actual - T(r_base))`` and
    bound ``b_actual + T(b_base)`` (r the references, b :func:`bound_of` the per-element bounds).
    ``rows``: a boolean array of the output's shape; where it is False both sides, both
    references and the bound are set to 0 (the relation says nothing there). The derivation is
    :data:`BOTH_TOLERANCES`, followed by `` (why)`` when ``why`` is given.
    """

    def same(x: np.ndarray) -> np.ndarray:
        return x

    t = same if transform is None else transform
    sides = [
        actual.output,
        t(base.output),
        actual.reference.value,
        t(base.reference.value),
        bound_of(actual) + t(bound_of(base)),
    ]
    if rows is not None:
        sides = [np.where(rows, side, 0.0) for side in sides]
    out, expected, ref_out, ref_expected, bound = sides
    return assert_relation(
        out,
        expected,
        ref_out,
        ref_expected,
        bound,
        what=what,
        derivation=BOTH_TOLERANCES + (f" ({why})" if why else ""),
    )


def reference_gap(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """|first - second| of two float64 references, 0 where both are the same non-finite value.

    Metamorphic bounds add this term: two references that exact arithmetic makes equal may still
    differ in float64 (rounding of the perturbed inputs to the dtype under test, float64 noise).
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        gap = np.abs(a - b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return np.where(same, 0.0, np.where(np.isfinite(gap), gap, np.inf))
