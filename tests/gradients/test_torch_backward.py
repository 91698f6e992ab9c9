"""What transpec's backward oracle finds in torch's CPU backward paths, each with a minimal case.

Each test is a standalone reproduction (torch only) of a finding that docs/torch.md tables, plus
the oracle's verdict on it. The tests keep the findings checked on the installed torch: a torch
that fixes one fails its test, and the table must then change.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_flash_causal_negative_scale_backward_is_nan() -> None:
    """The CPU flash kernel's causal negative-scale defect (forward) reaches the backward: every
    gradient is NaN where the math backend's are finite (L = 2, head dim 1, scale = -1)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 2, 1, dtype=torch.float64, generator=gen) for _ in range(3))
    g = torch.randn(1, 1, 2, 1, dtype=torch.float64, generator=gen)
    grads = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(*leaves, is_causal=True, scale=-1.0)
        grads[name] = torch.autograd.grad(out, leaves, g)
    assert all(bool(t.isnan().any()) for t in grads["flash"])
    assert not any(bool(t.isnan().any()) for t in grads["math"])


def test_layer_norm_half_backward_reads_statistics_stored_in_the_input_dtype() -> None:
    """torch saves LayerNorm's mean and 1/σ in the input dtype (native_layer_norm returns them
    in bfloat16), so the backward's x̄ errs by u·|μ|/σ: two elements, |μ|/σ ≈ 10, give
    x̄ = [0.00394, 0.00362] where the exact gradient is ±7.5e-5 (it must sum to 0)."""
    x = torch.tensor([1.37881118, 1.12097609], dtype=torch.bfloat16, requires_grad=True)
    g = torch.tensor([0.01571628, -0.01651311], dtype=torch.bfloat16)
    _, mean, rstd = torch.ops.aten.native_layer_norm(x.detach(), [2], None, None, 1e-5)
    assert mean.dtype == rstd.dtype == torch.bfloat16
    (dx,) = torch.autograd.grad(F.layer_norm(x, (2,), None, None, 1e-5), x, g)
    xd, gd = x.detach().double(), g.double()
    yhat = (xd - mean.double()) * rstd.double()  # the statistics as stored
    emulated = rstd.double() * (gd - gd.mean() - yhat * (gd * yhat).mean())
    assert torch.allclose(dx.double(), emulated, rtol=2**-7, atol=0)
    exact_sum = 0.0
    assert abs(float(dx.double().sum()) - exact_sum) > 7e-3  # 100× the exact |x̄|


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_half_backward_accumulates_the_bias_gradient_in_the_input_dtype(
    dtype: torch.dtype,
) -> None:
    """b̄ = Σ_rows g over 512 rows errs 5-15× more than the float32 sum rounded once: the sum
    is accumulated in the input dtype (torch's reductions otherwise accumulate in float32)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 33, generator=gen).to(dtype).requires_grad_()
    b = torch.zeros(33, dtype=dtype, requires_grad=True)
    g = torch.randn(512, 33, generator=gen).to(dtype)
    (db,) = torch.autograd.grad(F.layer_norm(x, (33,), None, b, 1e-5), b, g)
    exact = g.double().sum(0)
    err = float((db.double() - exact).abs().max())
    err_rounded_once = float((exact.to(dtype).double() - exact).abs().max())
    assert err > 4 * err_rounded_once


def test_the_oracle_reports_the_bias_accumulation_and_accepts_the_float32_sum() -> None:
    """transpec's layer_norm.grad_equivalence_bias fails torch in bfloat16 and passes the same
    backward with the bias gradient summed in float32."""
    from transpec.adapters.torch.adapter import TorchAdapter
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.outcome import PropertyViolation
    from transpec.oracle.gradients.calls import assert_gradient, call_vjp

    rng = np.random.default_rng(0)
    args = {
        "x": rng.standard_normal((512, 33)),
        "normalized_shape": (33,),
        "weight": None,
        "bias": np.zeros(33),
        "eps": 1e-5,
    }
    g = rng.standard_normal((512, 33))
    harness = Harness(TorchAdapter(), "bfloat16")
    call = call_vjp(harness, "layer_norm", args, g)
    with pytest.raises(PropertyViolation):
        assert_gradient(call, "bias")

    class Float32BiasSum(TorchAdapter):
        def vjp(self, component: str, native: dict, grad_output: object) -> dict:  # type: ignore[override]
            grads = dict(super().vjp(component, native, grad_output))
            summed = grad_output.float().sum(dim=0)  # type: ignore[attr-defined]
            grads["bias"] = summed.to(grads["bias"].dtype)
            return grads

    fixed = call_vjp(Harness(Float32BiasSum(), "bfloat16"), "layer_norm", args, g)
    assert assert_gradient(fixed, "bias") <= 1.0
    assert assert_gradient(fixed, "x") <= 1.0
