"""Derivations render for every block, from the definitions and the checked proof steps."""

from __future__ import annotations

import pytest

from transpec.spec.derive import BLOCKS, render
from transpec.spec.proofs import PROOFS


def test_blocks_list() -> None:
    assert {"softmax", "logsumexp", "attention", "masking", "layer_norm", "rms_norm"} <= set(BLOCKS)


@pytest.mark.parametrize("block", BLOCKS)
def test_markdown_has_definition_conventions_kernel_and_proofs(block: str) -> None:
    text = render(block)
    for heading in ("## Definition", "## Conventions", "## Kernel", "## Proved identities"):
        assert heading in text
    assert text.count("$$") % 2 == 0 and "$$" in text
    assert "def " in text  # the generated kernel source
    assert "NOT PROVED" not in text and "FAILED" not in text and "ACCEPTED" not in text


@pytest.mark.parametrize("block", BLOCKS)
def test_latex_body_is_balanced(block: str) -> None:
    text = render(block, "latex")
    assert text.startswith(r"\section*{")
    assert text.count(r"\[") == text.count(r"\]") > 0
    assert text.count(r"\begin{verbatim}") == text.count(r"\end{verbatim}")
    assert "$$" not in text


def test_rendered_steps_are_the_checked_steps() -> None:
    text = render("layer_norm")
    for pr in PROOFS:
        if pr.block != "layer_norm":
            continue
        assert pr.name in text
        for step in pr.prove().steps:
            assert step.latex in text


def test_attention_shows_every_convention_and_the_masking_proofs() -> None:
    text = render("attention")
    for word in ("gqa_mapping", "fully_masked_row", "scale", "softcap"):
        assert word in text
    assert "causal_bottom_right_no_future" in text and "gqa_equals_repeated_kv" in text
    masking = render("masking")
    assert "bottom_right" in masking and "L_{k} - L_{q}" in masking


def test_unknown_block_and_format_are_value_errors() -> None:
    with pytest.raises(ValueError, match="known blocks: softmax, logsumexp") as info:
        render("convolution")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="format"):
        render("softmax", "html")


def test_module_entry_points_print_derivations_and_proof_times(capsys) -> None:  # type: ignore[no-untyped-def]
    from transpec.spec import derive, proofs

    assert derive.main(["rms_norm", "--format", "latex"]) == 0
    assert capsys.readouterr().out.startswith(r"\section*{RMSNorm")
    with pytest.raises(SystemExit):
        derive.main(["no_such_block"])
    assert "known blocks" in capsys.readouterr().err
    assert proofs.main() == 0
    out = capsys.readouterr().out
    for pr in PROOFS:
        assert pr.name in out
    assert "NOT PROVED" not in out and "ACCEPTED" not in out
