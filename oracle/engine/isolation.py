"""Running the implementation under test in a worker process (``isolation="process"``).

With process isolation the run keeps everything that judges in its own process -- the
strategies, the float64 reference, the tolerances, the verdicts, the reports -- and sends each
call of the implementation to a :class:`Worker`: a child Python process that loaded the same
adapter again from its :class:`AdapterSource` (a built-in name, ``module:Class`` or
``module:function`` with its component and base). What crosses the pipe is native-agnostic:
the arguments as NumPy arrays and plain values (in the adapter's declared mask meaning), the
component, dtype and device names and the run's declarations snapshot; what comes back is what the
implementation was sent (the float64/bool copies the worker took *before* the call) and its
output as a float64 NumPy array, or the failure the worker's harness found (``raised``,
``mutated_input``, ``changed_conventions``, ``not_array``, ``dtype``:
:meth:`transpec.oracle.engine.harness.Harness.execute`).

What the implementation can do to a process now ends only the worker:

* a segfault, an abort, ``os._exit`` -- the pipe closes; the call is an
  :class:`~transpec.oracle.engine.outcome.ImplementationFailure` of kind ``"crashed"`` naming
  the signal or the exit code;
* a hang, in Python or in C code holding the GIL -- the parent waits at most ``call_timeout``
  seconds for the answer (the call, its conversions and the transfer), then kills the worker
  (``SIGKILL``): kind ``"hung"``; nothing keeps running;
* an unbounded allocation -- the worker's address space is capped (``RLIMIT_AS``,
  ``memory_limit`` bytes): the allocation fails, and the ``MemoryError`` is a ``"crashed"``
  failure that retires the worker (the implementation may hold on to what it took), or the
  process dies of it (``"crashed"`` as well).

A worker found dead when a call begins (something the implementation left running ended it
after it answered) fails that call as ``"crashed"`` (not called), never a silent restart. The
next call starts a fresh worker. The declarations (precision, ``supports``,
``layer_semantics``, ``provides``, the slow path's existence, the GQA signature) are data: the
parent reads them from its own instance of the adapter; only the calls run in the worker. The
worker's standard output is the parent's standard error, and it runs in its own session, so a
Ctrl-C at the terminal reaches the run, which then stops the worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from transpec.oracle.engine.outcome import ImplementationFailure

if TYPE_CHECKING:
    from transpec.adapters.base import Adapter, Declared
    from transpec.spec.conventions import Conventions

#: the isolation modes of a run: ``"none"`` calls the implementation in the run's own process
#: (a thread with a time limit), ``"process"`` in a :class:`Worker`
ISOLATIONS: tuple[str, ...] = ("none", "process")

#: seconds a new worker may take to import and load its adapter before the run gives up
START_TIMEOUT = 300.0

#: seconds between two looks at whether a worker that has not answered yet is still alive
_WATCH_PERIOD = 0.25


def check_isolation(isolation: str) -> str:
    """``isolation`` when it is one of :data:`ISOLATIONS`; ``ValueError`` (one line) otherwise."""
    if isolation not in ISOLATIONS:
        raise ValueError(
            f"unknown isolation {isolation!r}; expected one of {', '.join(ISOLATIONS)}"
        )
    return isolation


def default_memory_limit() -> int | None:
    """The address-space cap of a worker: half the machine's physical memory (``None`` where
    that is unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (AttributeError, OSError, ValueError):
        return None


class WorkerError(RuntimeError):
    """The worker could not be started or answered something transpec did not expect: an error
    of the run (a verdict ``error``), not a failure of the implementation."""


@dataclass(frozen=True)
class AdapterSource:
    """How a worker process loads the adapter under test again: ``spec`` as ``transpec check``
    takes it (a built-in name or ``module:attribute``); for a bare function, the ``component``
    it implements and the ``base`` adapter spec whose arrays it takes."""

    spec: str
    component: str | None = None
    base: str | None = None
    #: conventions declared on the instance after it was made (``--convention``, or set in
    #: Python), given to the reloaded adapter too; None: the adapter's own
    conventions: Conventions | None = None

    def load(self) -> Adapter:
        """The adapter (:func:`transpec.adapters.registry.load_adapter`), with
        :attr:`conventions` when given."""
        from transpec.adapters.registry import load_adapter

        if self.component is not None:
            adapter = load_adapter(self.spec, component=self.component, base=self.base)
        else:
            adapter = load_adapter(self.spec)
        return self.configure(adapter)

    def configure(self, adapter: Adapter) -> Adapter:
        """``adapter`` (loaded from this source) with :attr:`conventions` when given."""
        if self.conventions is not None and self.conventions != adapter.conventions:
            # on the instance only when they differ: a class-level change that the
            # implementation makes during a call must stay visible (changed_conventions)
            adapter.conventions = self.conventions
        return adapter


def _exit_text(code: int | None) -> str:
    """How a worker process ended, in words: ``killed by signal SIGSEGV (Segmentation fault)``,
    ``exited with code 0``."""
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"killed by signal {-code}"
        description = signal.strsignal(sig) if hasattr(signal, "strsignal") else None
        return f"killed by signal {sig.name}" + (f" ({description})" if description else "")
    return f"exited with code {code}"


def _launch() -> tuple[subprocess.Popen[bytes], Connection]:
    """A new worker process (:func:`serve`) and the parent's end of its socket pair."""
    parent, child = socket.socketpair()
    try:
        stdout: int = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        os.fstat(stdout)
    except (AttributeError, OSError, ValueError):
        stdout = subprocess.DEVNULL
    command = [
        sys.executable,
        "-c",
        "import sys; from transpec.oracle.engine.isolation import serve; serve(int(sys.argv[1]))",
        str(child.fileno()),
    ]
    try:
        process = subprocess.Popen(
            command,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            start_new_session=True,  # a terminal's Ctrl-C reaches the run, not the worker
        )
    except (OSError, ValueError) as exc:  # ValueError: no pass_fds on this platform
        parent.close()
        raise WorkerError(f"cannot start a worker process here: {exc}") from None
    finally:
        child.close()
    return process, Connection(parent.detach())


#: worker processes started ahead of their run (:func:`prestart`), by adapter spec
_SPARES: dict[str, tuple[subprocess.Popen[bytes], Connection]] = {}


def prestart(source: AdapterSource) -> None:
    """Start a worker process for ``source`` now and have it load the adapter, before this
    process loads its own copy: the two imports of the framework then run at once. The first
    :class:`Worker` of the same spec takes it over (its hello then names the conventions; a
    worker whose source differs loads the adapter again); one never taken is killed when this
    process exits. Nothing happens where a worker cannot be started."""
    if source.spec in _SPARES:
        return
    atexit.unregister(_end_spares)
    atexit.register(_end_spares)
    try:
        process, conn = _launch()
    except WorkerError:
        return
    _SPARES[source.spec] = (process, conn)  # (ended at exit, whatever interrupts this)
    info = {
        "spec": source.spec,
        "component": source.component,
        "base": source.base,
        "sys_path": list(sys.path),
    }
    try:
        conn.send(("preload", info))
    except OSError:
        _end(*_SPARES.pop(source.spec))


def _take_spare(source: AdapterSource) -> tuple[subprocess.Popen[bytes], Connection] | None:
    """The spare worker started for ``source.spec``, if one is still alive."""
    spare = _SPARES.pop(source.spec, None)
    if spare is not None and spare[0].poll() is not None:
        _end(*spare)
        return None
    return spare


def _end(process: subprocess.Popen[bytes], conn: Connection) -> None:
    with contextlib.suppress(OSError):
        conn.close()
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5.0)


def _end_spares() -> None:
    while _SPARES:
        _end(*_SPARES.popitem()[1])


class Worker:
    """A worker process that calls one adapter's components for the run (module docstring).

    Started on the first call; after a crash, a hang or an exhausted memory limit the next call
    starts a fresh one. :meth:`close` (or ``with``) ends it.
    """

    def __init__(
        self,
        source: AdapterSource,
        *,
        memory_limit: int | None = None,
        start_timeout: float = START_TIMEOUT,
        expect: str | None = None,
    ) -> None:
        """``expect``: the ``module:qualname`` of the adapter class under test; a worker that
        loads another class from ``source`` is a :class:`WorkerError`."""
        self.source = source
        self.expect = expect
        #: the ``module:qualname`` of the adapter the current worker loaded, and its conventions
        self.loaded: str | None = None
        self.loaded_conventions: Any = None
        self.memory_limit = memory_limit
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        #: whether the current worker answered its hello (loaded its adapter)
        self._ready = False
        self._spawned_at = 0.0
        #: how many worker processes were started (1 + the replacements)
        self.started = 0

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"Worker({self.source.spec!r}, pid={pid})"

    # -- the process ----------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the worker process now, if none runs, without waiting for it to load its
        adapter: it imports the framework while the run draws and computes its first
        references; the first call waits for it to be ready (within ``start_timeout``)."""
        if self._process is None:
            self._spawn()

    def _spawn(self) -> None:
        spare = _take_spare(self.source)
        if spare is not None:
            process, conn = spare
        else:
            process, conn = _launch()
        self._process, self._conn = process, conn
        self._ready = False
        self._spawned_at = time.monotonic()
        self.started += 1
        hello = {
            "spec": self.source.spec,
            "component": self.source.component,
            "base": self.source.base,
            "conventions": self.source.conventions,
            "sys_path": list(sys.path),
            "memory_limit": self.memory_limit,
        }
        # (a worker that died already: _await_ready reports its exit status)
        with contextlib.suppress(OSError):
            conn.send(("hello", hello))

    def _await_ready(self) -> None:
        conn = self._conn
        assert conn is not None
        waited = time.monotonic() - self._spawned_at
        try:
            if not conn.poll(max(0.0, self.start_timeout - waited)):
                self._kill()
                raise WorkerError(
                    f"the worker process did not load adapter {self.source.spec!r} within "
                    f"{self.start_timeout:g} s"
                )
            reply = conn.recv()
        except (EOFError, OSError):
            code = self._reap()
            raise WorkerError(
                f"the worker process {_exit_text(code)} while loading adapter {self.source.spec!r}"
            ) from None
        if reply[0] != "ready":
            self._kill()
            raise WorkerError(f"the worker process cannot load the adapter: {reply[1]}")
        _, self.loaded, self.loaded_conventions = reply
        self._ready = True
        if self.expect is not None and self.loaded != self.expect:
            self._kill()
            raise WorkerError(
                f"the worker process loaded {self.loaded} from {self.source.spec!r}, not the "
                f"adapter under test ({self.expect})"
            )

    def _reap(self, wait: float = 5.0) -> int | None:
        """The ended worker's exit status (killed if it lingers); forget it. Whatever is left
        of its process group -- a child the implementation forked, which must neither keep the
        pipe open nor run on -- is killed as well."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        if process is None:
            return None
        try:
            code = process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        with contextlib.suppress(OSError):  # the group outlives its leader's exit
            os.killpg(process.pid, signal.SIGKILL)
        return code

    def _kill(self) -> None:
        """Kill the worker now (its process group with it) and forget it."""
        if self._process is not None:
            with contextlib.suppress(OSError):
                os.killpg(self._process.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self._process.kill()
        self._reap()

    def close(self) -> None:
        """Stop the worker: killed (it holds nothing to save, and a clean exit of a framework
        can take a second)."""
        self._kill()

    @property
    def pid(self) -> int | None:
        """The process id of the current worker (None when none runs)."""
        return self._process.pid if self._process is not None else None

    # -- a call ---------------------------------------------------------------------------------

    def call(
        self,
        *,
        path: str,
        component: str,
        dtype: str,
        device: str,
        declared: Declared,
        encoded: dict[str, Any],
        drop_enable_gqa: bool,
        cotangent: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """(what was sent, the output as float64) of one call in the worker; with a
        ``cotangent``, of one backward call (the output is then the gradients by argument name,
        and what was sent includes the rounded cotangent: see
        :func:`transpec.oracle.gradients.calls.execute_vjp`). Raises the
        :class:`ImplementationFailure` the worker's harness found, ``"crashed"`` when the worker
        died, ``"hung"`` when it did not answer within ``declared.call_timeout`` seconds
        (then it is killed), and :class:`WorkerError` for an error of transpec's."""
        return self.submit(
            path=path,
            component=component,
            dtype=dtype,
            device=device,
            declared=declared,
            encoded=encoded,
            drop_enable_gqa=drop_enable_gqa,
            cotangent=cotangent,
        ).result()

    def submit(
        self,
        *,
        path: str,
        component: str,
        dtype: str,
        device: str,
        declared: Declared,
        encoded: dict[str, Any],
        drop_enable_gqa: bool,
        cotangent: np.ndarray | None = None,
    ) -> PendingCall:
        """Send one call to the worker and return at once: :meth:`PendingCall.sent` waits for
        what the implementation is being sent (a forward call's worker reports it before it
        calls, so the run computes the reference while the implementation runs),
        :meth:`PendingCall.result` for the answer (as :meth:`call`)."""
        if self._process is not None and not self._ready:
            self._await_ready()
        if self._process is not None and self._process.poll() is not None:
            code = self._reap()
            raise ImplementationFailure(
                "crashed",
                f"{component}: not called -- the worker process {_exit_text(code)} after it "
                "answered its previous call (something the implementation left running, a "
                "thread or a device's queued work, ended it)",
            )
        if self._process is None:
            self._spawn()
            self._await_ready()
        conn = self._conn
        assert conn is not None
        if path == "default" and self.loaded_conventions != declared.conventions:
            self._kill()
            raise WorkerError(
                f"the adapter the worker process loaded from {self.source.spec!r} declares "
                "other conventions than the adapter under test (configured after it was made?); "
                "judge it with isolation 'none'"
            )
        request = (
            "call",
            path,
            component,
            dtype,
            device,
            declared,
            encoded,
            drop_enable_gqa,
            cotangent,
        )
        pending = PendingCall(self, conn, component, declared.call_timeout)
        try:
            conn.send(request)
        except OSError:
            pending.crashed()
        return pending


def expected_sent(component: str, encoded: Mapping[str, Any], dtype: str) -> dict[str, Any] | None:
    """What the worker will report it sent for ``encoded``, if the adapter rounds as
    :func:`~transpec.oracle.engine.dtypes.round_to` does: every float array rounded to
    ``dtype`` and held as float64 (parameter dicts too), boolean and index arrays copied, every
    other value as given -- what :meth:`Harness.execute
    <transpec.oracle.engine.harness.Harness.execute>` reports for such an adapter. None when
    the arguments are not of the kinds it takes (the worker's answer then says why).

    The run computes the reference on this guess while the worker converts the arguments and
    calls the implementation, and keeps it only when the worker's report is the same bit for
    bit (:func:`~transpec.oracle.engine.dtypes.same_bits`): an adapter that converts otherwise
    is judged on what it reported, after the wait it always cost."""
    from transpec.oracle import components as registry
    from transpec.oracle.engine.dtypes import round_to

    try:
        record = registry.get(component)
        params = record.arguments_of("params")
        indices = record.arguments_of("index")
        arrays = record.arguments_of("array", "mask", "layer_mask")
        guess: dict[str, Any] = {}
        for name, value in encoded.items():
            if value is None or name not in (*params, *indices, *arrays):
                guess[name] = value
            elif name in params:
                guess[name] = {
                    key: None if item is None else _rounded(np.asarray(item), dtype, round_to)
                    for key, item in value.items()
                }
            elif name in indices:
                guess[name] = np.array(value, dtype=np.int64)
            elif np.asarray(value).dtype == np.bool_:
                guess[name] = np.array(value, dtype=np.bool_)
            else:
                guess[name] = _rounded(np.asarray(value), dtype, round_to)
    except Exception:  # not arguments the worker's harness takes: it reports why
        return None
    return guess


def _rounded(array: np.ndarray, dtype: str, round_to: Any) -> np.ndarray:
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"not a float array: {array.dtype}")
    # C order, as the copies the worker reports are made for an adapter that converts as
    # torch does (a reduction over another layout may differ in its last bits)
    return np.ascontiguousarray(round_to(array, dtype), dtype=np.float64).reshape(array.shape)


class PendingCall:
    """One call sent to a :class:`Worker`, its answer not yet read.

    The time limit runs from the request: an answer must come within ``call_timeout`` seconds
    (else the worker is killed: ``"hung"``), and the worker's own measure of the call (from
    the request to the answer) must be within it too, so that an answer read late, because
    the run was busy with the reference meanwhile, is judged by when it was made."""

    def __init__(self, worker: Worker, conn: Connection, component: str, timeout: float) -> None:
        self.worker = worker
        self.conn = conn
        self.component = component
        self.timeout = timeout
        self.started = time.monotonic()
        self._sent: dict[str, Any] | None = None
        self._final: tuple[Any, ...] | None = None

    def _wait(self) -> bool:
        """Wait until the worker answers (True), dies (an ``EOFError``, as when the pipe
        closes: a process it forked may hold the pipe open after it died) or the time limit
        passes (False). An answer already there is taken, however late it is read."""
        deadline = self.started + self.timeout
        process = self.worker._process
        while True:
            remaining = deadline - time.monotonic()
            if self.conn.poll(max(0.0, min(remaining, _WATCH_PERIOD))):
                return True
            if remaining <= 0:
                return False
            if process is None or process.poll() is not None:
                raise EOFError("the worker process ended")

    def abandon(self) -> None:
        """Stop waiting: the worker is killed with the call in flight (the run is stopping)."""
        self.worker._kill()

    def crashed(self) -> NoReturn:
        """Raise ``"crashed"``: the worker died (or its pipe broke) during this call."""
        code = self.worker._reap()
        seconds = time.monotonic() - self.started
        raise ImplementationFailure(
            "crashed",
            f"{self.component}: the worker process running it {_exit_text(code)} "
            f"after {seconds:.2g} s",
        ) from None

    def _next(self) -> tuple[Any, ...]:
        try:
            if not self._wait():
                self.worker._kill()
                raise ImplementationFailure(
                    "hung",
                    f"{self.component} did not return within {self.timeout:g} s (call_timeout); "
                    "its worker process was killed",
                )
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            self.crashed()
        except KeyboardInterrupt:
            self.worker._kill()  # the run stops; the call in flight is abandoned with its worker
            raise
        return message

    def _read(self) -> None:
        """Read the next message: what was sent (forward calls) or the final answer."""
        message = self._next()
        if message[0] == "sent":
            self._sent = message[1]
        else:
            self._final = message

    def sent(self) -> dict[str, Any]:
        """What the implementation was sent (float64/bool copies taken before the call);
        raises as :meth:`result` when the call ended without reporting it."""
        while self._sent is None and self._final is None:
            self._read()
        if self._sent is None:
            self.result()  # raises: the call failed before it was made
            raise WorkerError("in the worker process: no inputs reported")
        return self._sent

    def result(self) -> tuple[dict[str, Any], Any]:
        """(what was sent, the output as float64), or the failure (:meth:`Worker.call`)."""
        while self._final is None:
            self._read()
        *reply, seconds = self._final
        status = reply[0]
        if status == "ok":
            if seconds > self.timeout:
                raise ImplementationFailure(
                    "hung",
                    f"{self.component} did not return within {self.timeout:g} s "
                    f"(call_timeout): it answered after {seconds:.3g} s",
                )
            sent = reply[1] if reply[1] is not None else self._sent
            if sent is None:
                raise WorkerError("in the worker process: no inputs reported")
            return sent, reply[2]
        if status == "failure":
            _, kind, message, retire = reply
            if retire:
                self.worker._kill()
            raise ImplementationFailure(kind, message)
        self.worker._kill()
        raise WorkerError(f"in the worker process: {reply[1]}")


# -- the worker process's side ----------------------------------------------------------------


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to kill this process when its parent dies (a worker hung in C, or a job of a
    run, would otherwise outlive a run that was killed); nothing elsewhere. ``parent``: the
    pid the parent had; a process whose parent is already gone by then exits at once."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _limit_memory(limit: int | None) -> None:
    if not limit:
        return
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, whole, as the harness words an implementation's errors."""
    from transpec.oracle.engine.harness import _one_line as one_line

    return one_line(f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__)


def serve(fd: int) -> None:
    """The worker process: load the adapter the parent names, then answer calls until the
    parent says ``close`` or goes away."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the run stops
    sys.stdout = sys.stderr  # (descriptor 1 is the parent's standard error already)
    conn = Connection(fd)
    preloaded: tuple[tuple[Any, ...], Any] | None = None
    try:
        kind, hello = conn.recv()
        if kind == "preload":  # a spare worker: load now, while the run starts
            preloaded = _preload(hello)
            kind, hello = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = [p for p in hello["sys_path"] if isinstance(p, str)]
    memory_limit = hello["memory_limit"]
    source = AdapterSource(hello["spec"], hello["component"], hello["base"], hello["conventions"])
    try:
        if preloaded is not None and preloaded[0] == _source_key(source):
            adapter = source.configure(preloaded[1])
        else:
            adapter = source.load()
    except BaseException as exc:
        conn.send(("error", _one_line(exc)))
        return
    del preloaded
    _limit_memory(memory_limit)  # after the imports: only the implementation's calls are capped
    loaded = f"{type(adapter).__module__}:{type(adapter).__qualname__}"
    conn.send(("ready", loaded, getattr(adapter, "conventions", None)))
    adapters: dict[str, Any] = {"default": adapter}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "call":
            return
        started = time.monotonic()
        reply = _answer(adapters, message[1:], memory_limit, conn)
        seconds = time.monotonic() - started
        try:
            conn.send((*reply, seconds))
        except Exception as exc:  # an answer that cannot be pickled (transpec's bug)
            conn.send(("error", f"cannot send the answer: {_one_line(exc)}", seconds))
        if reply[0] == "failure" and reply[3]:
            return  # retire: the parent starts a fresh worker


def _source_key(source: AdapterSource) -> tuple[Any, ...]:
    return (source.spec, source.component, source.base)


def _preload(info: dict[str, Any]) -> tuple[tuple[Any, ...], Any] | None:
    """A spare worker's adapter, loaded before the run names its conventions (None when it
    cannot be loaded: the hello then loads it again and reports why)."""
    sys.path[:] = [p for p in info["sys_path"] if isinstance(p, str)]
    source = AdapterSource(info["spec"], info["component"], info["base"])
    try:
        return _source_key(source), source.load()
    except Exception:
        return None


def _answer(
    adapters: dict[str, Any],
    request: tuple[Any, ...],
    memory_limit: int | None,
    conn: Connection | None = None,
) -> Any:
    """The answer to one call; a forward call first sends ``("sent", what was sent)`` on
    ``conn``, before the implementation runs."""
    from transpec.oracle.engine.harness import Harness

    path, component, dtype, device, declared, encoded, drop, cotangent = request
    try:
        if path not in adapters:
            slow = adapters["default"].slow_path_adapter()
            if slow is None:
                raise ValueError(f"the adapter has no {path} path")
            adapters[path] = slow
        harness = Harness(adapters[path], dtype, device, declared=declared)
        if cotangent is not None:
            from transpec.oracle.gradients.calls import execute_vjp

            sent, grads = execute_vjp(harness, component, encoded, cotangent, drop_enable_gqa=drop)
            return ("ok", sent, grads)

        def report(sent: dict[str, Any]) -> None:
            if conn is not None:
                conn.send(("sent", sent))

        sent, output = harness.execute(
            component, encoded, drop_enable_gqa=drop, on_sent=report if conn else None
        )
        return ("ok", None if conn else sent, output)
    except ImplementationFailure as failure:
        if isinstance(failure.__cause__, MemoryError):
            return _out_of_memory(component, failure.__cause__, memory_limit)
        return ("failure", failure.kind, failure.message, False)
    except MemoryError as exc:
        return _out_of_memory(component, exc, memory_limit)
    except BaseException as exc:  # an error of transpec's, or of the adapter's conversions
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return ("error", " ".join(text.split()))


def _out_of_memory(component: str, exc: MemoryError, memory_limit: int | None) -> Any:
    """The answer to a call that exhausted the worker's memory: ``"crashed"``, and this worker
    retires (what the implementation took may still be held by it)."""
    limit = f" (limit {memory_limit / 2**20:.0f} MiB)" if memory_limit else ""
    return (
        "failure",
        "crashed",
        f"{component} ran out of memory in its worker process{limit}: {_one_line(exc)}; the "
        "worker was replaced",
        True,
    )
