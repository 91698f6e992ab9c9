"""Every identity of the catalogue is proved, and its broken variant is rejected."""

from __future__ import annotations

import pytest
import sympy as sp

from transpec.spec.proofs import PROOFS, decide, proof

NAMES = [p.name for p in PROOFS]


def test_catalogue_covers_the_required_identities() -> None:
    required = {
        "softmax_rows_sum_to_one",
        "softmax_shift_invariance",
        "softmax_jacobian",
        "online_softmax_recurrence",
        "online_softmax_merge",
        "masked_keys_zero_weight",
        "causal_top_left_no_future",
        "causal_bottom_right_no_future",
        "gqa_equals_repeated_kv",
        "layer_norm_zero_mean",
        "layer_norm_unit_variance",
        "layer_norm_affine_invariance",
        "rms_norm_unit_rms",
        "rms_norm_scale_invariance",
    }
    assert required <= set(NAMES)
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_proof_holds_and_negative_control_is_rejected(name: str) -> None:
    pr = proof(name)
    result = pr.prove()
    assert result.proved, [s.latex for s in result.steps if not s.holds]
    assert result.steps and all(s.holds and s.latex for s in result.steps)
    assert result.seconds >= 0 and all(s.seconds >= 0 for s in result.steps)
    assert pr.statement and pr.block
    control = pr.negative_control()
    assert control.rejected and not control.proved
    assert any(not s.holds for s in control.steps)


x, y = sp.symbols("x y", real=True)
a = sp.Symbol("a", positive=True)
w = sp.Symbol("w", positive=True)
N = sp.Symbol("N", integer=True, positive=True)
j = sp.Symbol("j", integer=True)
t = sp.IndexedBase("t", real=True)


@pytest.mark.parametrize(
    ("lhs", "rhs"),
    [
        (sp.exp(x + y), sp.exp(x) * sp.exp(y)),
        (sp.exp(-2 * x), 1 / sp.exp(x) ** 2),
        (sp.sqrt(a**2 * w), a * sp.sqrt(w)),
        (sp.Sum(t[j] + 1, (j, 0, N - 1)), sp.Sum(t[j], (j, 0, N - 1)) + N),
        (sp.Sum(sp.exp(t[j] + x), (j, 0, N - 1)), sp.exp(x) * sp.Sum(sp.exp(t[j]), (j, 0, N - 1))),
        ((x**2 - y**2) / (x - y), x + y),
        (sp.Sum(sp.KroneckerDelta(x, j) * t[j], (j, 0, N - 1)), t[x]),
        (
            sp.log(sp.exp(x) * sp.Sum(sp.exp(t[j]), (j, 0, N - 1))),
            x + sp.log(sp.Sum(sp.exp(t[j]), (j, 0, N - 1))),
        ),
    ],
)
def test_decide_accepts_identities(lhs: sp.Expr, rhs: sp.Expr) -> None:
    assert decide(lhs, rhs)


@pytest.mark.parametrize(
    ("lhs", "rhs"),
    [
        (x, y),
        (sp.exp(x), sp.exp(y)),
        (sp.sqrt(a**2 * w), -a * sp.sqrt(w)),
        (sp.sqrt(x**2), x),  # |x| is not x for real x
        (sp.Sum(t[j], (j, 0, N - 1)), sp.Sum(t[j], (j, 0, N - 2))),
        (sp.Sum(t[j], (j, 0, N - 1)), sp.Sum(t[j], (j, 1, N))),
        (sp.tanh(x), x),
        (sp.Sum(sp.KroneckerDelta(x, j) * t[j], (j, 0, N - 1)), t[y]),
        (x / (x + 1e-30), 1),
    ],
)
def test_decide_rejects_non_identities(lhs: sp.Expr, rhs: sp.Expr) -> None:
    assert not decide(lhs, rhs)


def test_unknown_proof_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="known:"):
        proof("no_such_identity")


def test_nested_dependent_sums_are_refused_not_guessed() -> None:
    k = sp.Symbol("k", integer=True)
    nested = sp.Sum(t[j] * sp.Sum(t[k + j], (k, 0, N - 1)), (j, 0, N - 1))
    with pytest.raises(ValueError, match="nested"):
        decide(nested, 0)
