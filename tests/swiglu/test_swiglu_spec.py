"""The SwiGLU spec: its proofs are proved and their controls rejected by the rational-function
procedure, the SymPy definition agrees with the float64 reference, the derive page renders."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from transpec.oracle import swiglu
from transpec.spec import layers
from transpec.spec.derive import BLOCKS, render

PROOFS = [p for p in layers.catalogue() if p.block == "swiglu_feed_forward"]
CONTROLS = [(p, c) for p in PROOFS for c in p.controls]


def test_the_catalogue_has_the_swiglu_proofs() -> None:
    assert {p.name for p in PROOFS} == {
        "swiglu_linear_in_up_and_down",
        "swiglu_token_permutation_equivariance",
        "swiglu_hidden_unit_permutation_invariance",
    }


@pytest.mark.parametrize("proof", PROOFS, ids=lambda p: p.name)
def test_proof_is_proved(proof: layers.DecidedProof) -> None:
    result = proof.prove()
    assert result.proved and all(step.holds for step in result.steps)
    assert proof.decider is layers.decide_exponential


@pytest.mark.parametrize(("proof", "control"), CONTROLS, ids=[f"{p.name}-{c}" for p, c in CONTROLS])
def test_negative_control_is_rejected(proof: layers.DecidedProof, control: str) -> None:
    result = proof.run_control(control)
    assert result.rejected and not result.proved


def test_silu_is_not_odd_but_z_minus_silu_of_minus_z_needs_exp_inverse() -> None:
    """The procedure keys e^{z} and e^{-z} as independent positive symbols: an identity that
    needs e^{z}e^{-z} = 1 (silu(z) - silu(-z) = z) is refused as unproved, never guessed."""
    z = sp.Symbol("z", real=True)
    holds, residual = layers.decide_exponential(layers.silu(z) - layers.silu(-z), z)
    assert not holds and residual != 0


def test_definition_agrees_with_the_float64_reference() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2))
    params = {
        "w1.weight": rng.standard_normal((4, 2)),
        "w2.weight": rng.standard_normal((2, 4)),
        "w3.weight": rng.standard_normal((4, 2)),
    }
    exact = layers.swiglu_feed_forward(
        sp.Matrix(x.tolist()), {k: sp.Matrix(v.tolist()) for k, v in params.items()}
    )
    value = np.array(exact.evalf(30).tolist(), dtype=np.float64)
    np.testing.assert_allclose(swiglu.swiglu_feed_forward(x, params), value, rtol=1e-13)


def test_derive_page() -> None:
    assert "swiglu_feed_forward" in BLOCKS
    text = render("swiglu_feed_forward")
    assert text.startswith("# SwiGLU feed-forward (swiglu_feed_forward)")
    assert "def swiglu_feed_forward" in text and "def silu" in text
    assert "(transpec.oracle.swiglu)" in text
    for proof in PROOFS:
        assert f"### {proof.name}: proved" in text
    assert "NOT PROVED" not in text and "ACCEPTED" not in text
    assert render("feed_forward").count("transpec.oracle.layers.reference") >= 1
