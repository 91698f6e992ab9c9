"""ONNX Runtime's opset-23 operators, each run as a one-node model on the CPU execution provider.

A user of ONNX Runtime builds a model and runs it in a session; this adapter does the same for
each component: a one-node graph made with ``onnx.helper`` (inputs of unknown shape, so one
session serves every shape), opset 23, run by ``onnxruntime.InferenceSession`` on
``CPUExecutionProvider``. Sessions are cached per operator, dtype, attributes and present
inputs.

==================  =============================  ====================================
component           operator                       dtypes the CPU provider implements
==================  =============================  ====================================
softmax             ``Softmax`` (axis)             float64, float32, float16
layer_norm          ``LayerNormalization`` (17)    float64, float32, float16, bfloat16
rms_norm            ``RMSNormalization`` (23)      float64, float32, float16
attention           ``Attention`` (23), 4-D        float64, float32, float16
rotary_embedding    ``RotaryEmbedding`` (23)       float32, float16
==================  =============================  ====================================

The dtypes are measured on onnxruntime 1.31.1 (``component_dtypes``): making a bfloat16
session of ``Softmax``, ``RMSNormalization``, ``Attention`` or ``RotaryEmbedding`` fails with
NOT_IMPLEMENTED (their function bodies' ``ReduceMax``, ``Mul``, ``Expand`` or the operator
itself have no bfloat16 CPU kernel); ``LayerNormalization`` has one; ``RotaryEmbedding`` takes
no float64 (its type constraint is float, float16, bfloat16). bfloat16 arrays go in and out as
``OrtValue`` s of ONNX type BFLOAT16 (``ml_dtypes.bfloat16`` NumPy arrays viewed as uint16; the
plain ``session.run`` refuses them), bound with ``io_binding``.

``RotaryEmbedding`` is called as a model exporter calls it: ``X`` 4-D (B, H, L, D) -- x's
leading dims flattened into H, batch 1 --, ``position_ids`` (1, L) (``offset + arange(L)`` or the
positions given), and cos/sin caches of shape (max position + 1, D/2) holding cos(p·θ_i),
sin(p·θ_i), θ_i = base^(-2i/D), computed in float64 and rounded to the dtype (the operator takes
them as inputs; an exact cache judges the operator, not the cache's maker), ``interleaved=0``
(its default: pairs (x_i, x_{i+D/2}), transpec's canonical ``rope_pairing="half_split"``).

What ONNX specifies and the adapter therefore declares:
the scalar attributes ``epsilon`` and ``scale`` are ``float`` (float32) attributes, and the
default scale 1/sqrt(E) is computed in float too (``scalar_attributes="float32"``); the other
conventions are the canonical ones (boolean mask True = attend, top-left causal, grouped heads
by ``repeat_interleave``, a fully masked query row 0 -- the float and float16 kernels; the
float64 path returns NaN there, a defect). Rejected by design: a scale
<= 0 (the float and float16 kernels refuse it when the session is made), inputs that are not
4-D. Measured and triaged in docs/findings.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.arrays import NumpyArrays
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

#: the opset every model is built for
OPSET = 23
#: the ONNX IR version of the models (the one opset 23 came with)
IR_VERSION = 11

_DTYPES: dict[str, tuple[str, ...]] = {
    "softmax": ("float64", "float32", "float16"),
    "layer_norm": ("float64", "float32", "float16", "bfloat16"),
    "rms_norm": ("float64", "float32", "float16"),
    "attention": ("float64", "float32", "float16"),
    "rotary_embedding": ("float32", "float16"),
}


@functools.cache
def _onnx() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, imported on first use."""
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def _element_type(dtype: str) -> int:
    onnx, _ = _onnx()
    return {
        "float64": onnx.TensorProto.DOUBLE,
        "float32": onnx.TensorProto.FLOAT,
        "float16": onnx.TensorProto.FLOAT16,
        "bfloat16": onnx.TensorProto.BFLOAT16,
        "bool": onnx.TensorProto.BOOL,
        "int64": onnx.TensorProto.INT64,
    }[dtype]


class OnnxRuntimeAdapter(NumpyArrays):
    """ONNX Runtime (CPU execution provider) behind the adapter contract: see the module
    docstring for the operators, dtypes and declarations."""

    name = "onnxruntime"
    framework = "numpy"
    conventions = Conventions(scalar_attributes="float32")
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu",)
    supports_gqa = True

    def __init__(self) -> None:
        _onnx()  # a missing onnx/onnxruntime is one ImportError at load time
        self._sessions: dict[tuple[Any, ...], Any] = {}

    # -- declarations -------------------------------------------------------------------------

    def component_dtypes(self, component: str) -> tuple[str, ...] | None:
        """The dtypes the CPU execution provider implements for ``component``'s operator."""
        return _DTYPES.get(component)

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """What the operators do not take: ``Attention`` takes 4-D (B, H, L, E) (or 3-D packed)
        inputs, so other batch ranks are not passed; ``RMSNormalization`` has no
        dtype-dependent default epsilon (an absent ``epsilon`` is 1e-5)."""
        if component == "attention":
            q, mask, scale = args.get("q"), args.get("attn_mask"), args.get("scale")
            if scale is not None and scale <= 0 and dtype in ("float32", "float16"):
                return "ONNX Runtime's float/float16 Attention kernel rejects scale <= 0"
            if q is not None and np.ndim(q) != 4:
                return "ONNX Attention takes 4-D (B, H, L, E) inputs"
            if mask is not None and np.ndim(mask) < 2:
                return "ONNX Attention takes an attn_mask of rank 2 to 4 (broadcast to B, H, L, S)"
        if component == "rms_norm" and args.get("eps", 0.0) is None:
            return (
                "ONNX RMSNormalization has no dtype-dependent default epsilon (its default is 1e-5)"
            )
        return None

    def describe(self) -> str:
        onnx, ort = _onnx()
        return (
            f"{self.name} (onnxruntime {ort.__version__}, onnx {onnx.__version__}; opset {OPSET}, "
            "CPUExecutionProvider)"
        )

    # -- sessions -----------------------------------------------------------------------------

    def _session(
        self,
        op: str,
        inputs: tuple[tuple[str, str], ...],
        dtype: str,
        attributes: Mapping[str, Any],
    ) -> Any:
        """The session of a one-node ``op`` model with ``inputs`` ((name, element dtype) pairs,
        in the operator's order, "" for an omitted optional input), output ``Y`` of ``dtype``."""
        key = (op, inputs, dtype, tuple(sorted(attributes.items())))
        session = self._sessions.get(key)
        if session is None:
            onnx, ort = _onnx()
            helper = onnx.helper
            graph_inputs = [
                helper.make_tensor_value_info(name, _element_type(kind), None)
                for name, kind in inputs
                if name
            ]
            node = helper.make_node(op, [name for name, _ in inputs], ["Y"], **attributes)
            graph = helper.make_graph(
                [node],
                f"transpec_{op}",
                graph_inputs,
                [helper.make_tensor_value_info("Y", _element_type(dtype), None)],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
            model.ir_version = IR_VERSION
            options = ort.SessionOptions()
            options.log_severity_level = 4  # errors come back as exceptions, not log lines
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            self._sessions[key] = session
        return session

    def _run(
        self, op: str, feeds: Mapping[str, Any], dtype: str, attributes: Mapping[str, Any]
    ) -> np.ndarray:
        inputs: list[tuple[str, str]] = []
        for name, value in feeds.items():
            if value is None:
                inputs.append(("", ""))  # an omitted optional input
                continue
            kind = np.asarray(value).dtype
            if kind == np.bool_ or kind == np.int64:
                inputs.append((name, kind.name))
            else:
                inputs.append((name, canonical_dtype(kind.name)))
        while inputs and inputs[-1] == ("", ""):
            inputs.pop()  # trailing omitted inputs are left out of the node
        session = self._session(op, tuple(inputs), dtype, attributes)
        present = {name: np.asarray(value) for name, value in feeds.items() if value is not None}
        if dtype == "bfloat16":
            return _run_bfloat16(session, present)
        (out,) = session.run(["Y"], present)
        return np.asarray(out)

    # -- components ---------------------------------------------------------------------------

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        """``RotaryEmbedding(X, cos_cache, sin_cache, position_ids)`` on x viewed as (1, N, L, D),
        the caches computed exactly for positions 0 .. max and rounded to x's dtype (module
        docstring)."""
        length, dim = int(x.shape[-2]), int(x.shape[-1])
        pos = (
            np.arange(offset, offset + length, dtype=np.int64)
            if positions is None
            else np.asarray(positions, dtype=np.int64)
        )
        theta = float(base) ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles = np.arange(int(pos.max()) + 1, dtype=np.float64)[:, None] * theta[None, :]
        heads = math.prod(int(n) for n in x.shape[:-2])
        feeds = {
            "X": np.ascontiguousarray(x).reshape(1, heads, length, dim),
            "cos_cache": self.to_native(np.cos(angles), x.dtype.name, "cpu"),
            "sin_cache": self.to_native(np.sin(angles), x.dtype.name, "cpu"),
            "position_ids": pos.reshape(1, length),
        }
        out = self._run("RotaryEmbedding", feeds, canonical_dtype(x.dtype.name), {})
        return out.reshape(x.shape)

    def softmax(self, x: Any, dim: int = -1) -> Any:
        """``Softmax(x, axis=dim)``."""
        return self._run("Softmax", {"X": x}, canonical_dtype(x.dtype.name), {"axis": int(dim)})

    def layer_norm(
        self,
        x: Any,
        normalized_shape: Any,
        weight: Any = None,
        bias: Any = None,
        eps: float = 1e-5,
    ) -> Any:
        """``LayerNormalization(X, Scale, B, axis=-len(normalized_shape), epsilon=eps)``; the
        operator requires Scale, so an absent weight is passed as ones (its identity)."""
        shape = tuple(int(n) for n in normalized_shape)
        if weight is None:
            weight = np.ones(shape, dtype=x.dtype)
        dtype = canonical_dtype(x.dtype.name)
        attributes = {"axis": -len(shape), "epsilon": float(eps)}
        return self._run(
            "LayerNormalization", {"X": x, "Scale": weight, "B": bias}, dtype, attributes
        )

    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        """``RMSNormalization(X, scale, axis=-len(normalized_shape), epsilon=eps)``; the operator
        requires scale, so an absent weight is passed as ones."""
        shape = tuple(int(n) for n in normalized_shape)
        if weight is None:
            weight = np.ones(shape, dtype=x.dtype)
        dtype = canonical_dtype(x.dtype.name)
        attributes = {"axis": -len(shape), "epsilon": float(eps if eps is not None else 1e-5)}
        return self._run("RMSNormalization", {"X": x, "scale": weight}, dtype, attributes)

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> Any:
        """``Attention(Q, K, V, attn_mask, is_causal=..., scale=..., softcap=...)`` on 4-D
        inputs; grouped K/V heads are the operator's own (Hq a multiple of Hkv). ONNX applies
        the softcap to the scaled scores before the mask, as transpec does."""
        attributes: dict[str, Any] = {"is_causal": int(bool(is_causal))}
        if scale is not None:
            attributes["scale"] = float(scale)
        if softcap is not None:
            attributes["softcap"] = float(softcap)
        dtype = canonical_dtype(q.dtype.name)
        feeds = {"Q": q, "K": k, "V": v, "attn_mask": attn_mask}
        return self._run("Attention", feeds, dtype, attributes)


def _run_bfloat16(session: Any, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run ``session`` on bfloat16 inputs, which ONNX Runtime's Python API takes only as
    ``OrtValue`` s of ONNX type BFLOAT16; the output ``Y``, of X's shape (every operator with a
    bfloat16 CPU kernel here keeps it), is bound to a preallocated one of the same type."""
    onnx, ort = _onnx()
    bf16 = onnx.TensorProto.BFLOAT16
    binding = session.io_binding()
    for name, value in feeds.items():
        if value.dtype.name == "bfloat16":
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value.view(np.uint16), bf16)
            )
        else:
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
    raw = np.zeros(feeds["X"].shape, dtype=np.uint16)
    binding.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, bf16))
    session.run_with_iobinding(binding)
    return raw.view(feeds["X"].dtype)
