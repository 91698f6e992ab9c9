"""The layer and positional proofs: each proves, each negative control is rejected, and the
decision helpers refuse what they cannot decide."""

from __future__ import annotations

import pytest
import sympy as sp

from transpec.spec import layers, positional

CATALOGUE = layers.catalogue()
CONTROLS = [(p, c) for p in CATALOGUE for c in p.controls]


def test_catalogue_names_are_unique_and_every_proof_has_a_control() -> None:
    names = [p.name for p in CATALOGUE]
    assert len(names) == len(set(names))
    assert {p.name for p in positional.POSITIONAL_PROOFS} <= set(names)
    assert all(p.controls for p in CATALOGUE)


@pytest.mark.parametrize("proof", CATALOGUE, ids=lambda p: p.name)
def test_proof_proves(proof: layers.Proof) -> None:
    result = proof.run()
    assert result.proved, result.residual
    assert result.residual == "0"
    assert result.steps and result.steps[-1].description.startswith("all ")


@pytest.mark.parametrize(("proof", "control"), CONTROLS, ids=[f"{p.name}-{c}" for p, c in CONTROLS])
def test_negative_control_is_rejected(proof: layers.Proof, control: str) -> None:
    result = proof.run_control(control)
    assert not result.proved
    assert result.residual != "0"
    assert "rejected" in result.steps[-1].description


def test_unknown_control_is_an_error() -> None:
    with pytest.raises(ValueError, match="has no control"):
        CATALOGUE[0].run_control("no such control")


def test_rational_residuals_refuse_transcendental_entries() -> None:
    x = sp.Symbol("x", real=True)
    with pytest.raises(ValueError, match="not a rational function"):
        list(layers.rational_residuals(sp.Matrix([[sp.exp(x)]]), sp.Matrix([[1 + x]])))


def test_rational_residuals_decide_both_ways() -> None:
    a, b = sp.symbols("a b", positive=True)
    same = list(
        layers.rational_residuals(sp.Matrix([[a / (a + b)]]), sp.Matrix([[1 - b / (a + b)]]))
    )
    assert same == [0]
    differ = list(layers.rational_residuals(sp.Matrix([[a / (a + b)]]), sp.Matrix([[b / (a + b)]])))
    assert differ[0] != 0


def test_exp_atoms_key_on_the_exact_exponent() -> None:
    x, y = sp.symbols("x y", real=True)
    exp = layers.ExpAtoms()
    assert exp((x + y) ** 2) is exp(x**2 + 2 * x * y + y**2)
    assert exp(x * y) is not exp(x * y + 1)
    assert exp(-sp.oo) == 0
    with pytest.raises(ValueError, match="polynomial"):
        exp(1 / x)


def test_circle_reduction_is_a_normal_form() -> None:
    atoms = positional.CircleAtoms()
    a = sp.Symbol("a", real=True)
    c = atoms(sp.cos(a))
    s = atoms(sp.sin(a))
    assert atoms.reduce(c**2 + s**2 - 1) == 0
    assert atoms.reduce(c**4 - s**4 - (c**2 - s**2)) == 0
    assert atoms.reduce(c**2 - s**2) != 0


def test_softmax_rows_refuses_a_fully_masked_row() -> None:
    with pytest.raises(ZeroDivisionError, match="every score -inf"):
        layers.softmax_rows(sp.Matrix([[-sp.oo, -sp.oo]]))
