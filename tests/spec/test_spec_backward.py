"""The backward identities: each proved from the block's SymPy definition, each negative
control rejected, each rendered by ``transpec derive``."""

from __future__ import annotations

import pytest

from transpec.spec.backward import BACKWARD_PROOFS, backward_proofs
from transpec.spec.derive import render

NAMES = [p.name for p in BACKWARD_PROOFS]


def test_the_catalogue_covers_every_kernel_and_the_issue_list() -> None:
    for block in ("softmax", "attention", "layer_norm", "rms_norm"):
        assert backward_proofs(block), block
    for required in (
        "softmax_vjp",
        "softmax_vjp_row_sum",
        "attention_vjp",
        "attention_vjp_softcap",
        "attention_vjp_gqa_group_sum",
        "attention_vjp_masked_keys_zero",
        "attention_vjp_causal",
        "layer_norm_vjp",
        "layer_norm_vjp_invariances",
        "rms_norm_vjp",
        "rms_norm_vjp_orthogonality",
    ):
        assert required in NAMES, required


@pytest.mark.parametrize("name", NAMES)
def test_proved_and_its_negative_control_rejected(name: str) -> None:
    pr = next(p for p in BACKWARD_PROOFS if p.name == name)
    result = pr.prove()
    assert result.proved, [s.why for s in result.steps if not s.holds]
    assert pr.negative_control().rejected


@pytest.mark.parametrize("block", ["softmax", "attention", "layer_norm", "rms_norm"])
def test_derive_shows_the_backward(block: str) -> None:
    text = render(block)
    assert "## Backward (vector-Jacobian product)" in text
    for pr in backward_proofs(block):
        assert f"### {pr.name}: proved" in text
    assert "ACCEPTED" not in text and "NOT PROVED" not in text
