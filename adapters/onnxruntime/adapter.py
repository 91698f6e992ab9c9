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
layer_norm          ``LayerNormalization`` (17)    float64, float32, float16
rms_norm            ``RMSNormalization`` (23)      float64, float32, float16
attention           ``Attention`` (23), 4-D        float64, float32, float16
==================  =============================  ====================================

(bfloat16: the CPU provider has no bfloat16 Softmax, RMSNormalization or Attention kernel --
session creation fails with NOT_IMPLEMENTED -- and its Python API takes no bfloat16 NumPy
arrays, so bfloat16 is not declared.) What ONNX specifies and the adapter therefore declares:
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
    "layer_norm": ("float64", "float32", "float16"),
    "rms_norm": ("float64", "float32", "float16"),
    "attention": ("float64", "float32", "float16"),
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
        "bool": onnx.TensorProto.BOOL,
    }[dtype]


class OnnxRuntimeAdapter(NumpyArrays):
    """ONNX Runtime (CPU execution provider) behind the adapter contract: see the module
    docstring for the operators, dtypes and declarations."""

    name = "onnxruntime"
    framework = "numpy"
    conventions = Conventions(scalar_attributes="float32")
    dtypes: tuple[str, ...] = ("float64", "float32", "float16")
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
            inputs.append((name, "bool" if kind == np.bool_ else canonical_dtype(kind.name)))
        while inputs and inputs[-1] == ("", ""):
            inputs.pop()  # trailing omitted inputs are left out of the node
        session = self._session(op, tuple(inputs), dtype, attributes)
        present = {name: np.asarray(value) for name, value in feeds.items() if value is not None}
        (out,) = session.run(["Y"], present)
        return np.asarray(out)

    # -- components ---------------------------------------------------------------------------

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
