"""The layer and positional proofs: each proves, each negative control is rejected, they share
the catalogue API of transpec.spec.proofs, and the decision helpers refuse what they cannot
decide."""

from __future__ import annotations

import pytest
import sympy as sp

from transpec.spec import layers, positional, proofs

CATALOGUE = layers.catalogue()
CONTROLS = [(p, c) for p in CATALOGUE for c in p.controls]


def test_catalogue_lists_with_the_core_proofs() -> None:
    names = [p.name for p in (*proofs.PROOFS, *CATALOGUE)]
    assert len(names) == len(set(names))
    assert {p.name for p in positional.POSITIONAL_PROOFS} <= set(names)
    for pr in CATALOGUE:
        assert isinstance(pr, proofs.Proof)
        assert pr.controls and pr.control == pr.controls[0]
        assert pr.block and pr.statement


@pytest.mark.parametrize("proof", CATALOGUE, ids=lambda p: p.name)
def test_proof_proves(proof: layers.DecidedProof) -> None:
    result = proof.prove()
    assert isinstance(result, proofs.ProofResult)
    assert result.proved
    assert result.steps and all(step.holds for step in result.steps)
    assert len(result.steps) == len(proof.steps())
    # LaTeX for the derivations: printable (a lost backslash would leave a tab or a form feed)
    assert proof.statement.isprintable()
    assert all(step.latex.isprintable() for step in result.steps)


@pytest.mark.parametrize(("proof", "control"), CONTROLS, ids=[f"{p.name}-{c}" for p, c in CONTROLS])
def test_negative_control_is_rejected(proof: layers.DecidedProof, control: str) -> None:
    result = proof.run_control(control)
    assert result.rejected
    assert not result.steps[-1].holds


def test_negative_control_method_runs_the_first_control() -> None:
    pr = CATALOGUE[0]
    result = pr.negative_control()
    assert result.rejected and pr.control in result.name


def test_unknown_control_is_an_error() -> None:
    with pytest.raises(ValueError, match="has no control"):
        CATALOGUE[0].run_control("no such control")


def test_decided_proof_needs_a_control() -> None:
    with pytest.raises(ValueError, match="negative control"):
        layers.decided_proof("p", "b", "s", "m", layers.decide_polynomial, lambda c: [], ())


def test_rational_residual_refuses_transcendental_entries() -> None:
    x = sp.Symbol("x", real=True)
    with pytest.raises(ValueError, match="not a rational function"):
        layers.rational_residual(sp.exp(x), 1 + x)


def test_rational_residual_decides_both_ways() -> None:
    a, b = sp.symbols("a b", positive=True)
    assert layers.rational_residual(a / (a + b), 1 - b / (a + b)) == 0
    assert layers.rational_residual(a / (a + b), b / (a + b)) != 0


def test_decide_exponential_keys_on_the_exact_exponent() -> None:
    x, y = sp.symbols("x y", real=True)
    same = sp.exp((x + y) ** 2) / (1 + sp.exp(x**2 + 2 * x * y + y**2))
    assert layers.decide_exponential(same, 1 - 1 / (1 + sp.exp(x**2 + 2 * x * y + y**2)))[0]
    # e^(x+1) = e * e^x is true but not decided: the exponents differ as polynomials, so the
    # procedure treats them as independent (sound: it never accepts a false identity)
    assert not layers.decide_exponential(sp.exp(x + 1), sp.E * sp.exp(x))[0]
    atoms = layers.ExpAtoms()
    assert atoms(-sp.oo) == 0
    with pytest.raises(ValueError, match="polynomial"):
        atoms(1 / x)


def test_decide_polynomial_refuses_non_polynomials() -> None:
    x = sp.Symbol("x", real=True)
    assert layers.decide_polynomial((x + 1) ** 2, x**2 + 2 * x + 1)[0]
    with pytest.raises(ValueError, match="not a polynomial"):
        layers.decide_polynomial(1 / x, 0)


def test_circle_decider_is_a_normal_form() -> None:
    a, b = sp.symbols("a b", real=True)
    assert positional.decide_circle(sp.cos(a) ** 2 + sp.sin(a) ** 2, 1)[0]
    assert positional.decide_circle(
        sp.cos(a) ** 4 - sp.sin(a) ** 4, sp.cos(a) ** 2 - sp.sin(a) ** 2
    )[0]
    assert positional.decide_circle(sp.cos(a + b), sp.cos(a) * sp.cos(b) - sp.sin(a) * sp.sin(b))[0]
    assert not positional.decide_circle(sp.cos(a) ** 2, sp.sin(a) ** 2)[0]
    assert not positional.decide_circle(sp.cos(a + b), sp.cos(a) * sp.cos(b))[0]


def test_softmax_rows_refuses_a_fully_masked_row() -> None:
    with pytest.raises(ZeroDivisionError, match="every score -inf"):
        layers.softmax_rows(sp.Matrix([[-sp.oo, -sp.oo]]))
