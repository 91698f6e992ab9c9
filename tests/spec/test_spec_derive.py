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


LAYER_BLOCKS = (
    "embedding",
    "sinusoidal_positional_encoding",
    "rotary_embedding",
    "alibi_bias",
    "multi_head_attention",
    "masked_self_attention",
    "cross_attention",
    "feed_forward",
    "encoder_layer",
    "decoder_layer",
)


def test_every_layer_and_positional_block_is_rendered() -> None:
    assert set(LAYER_BLOCKS) <= set(BLOCKS)


def test_layer_proofs_are_rendered_with_their_checked_steps() -> None:
    from transpec.spec.layers import catalogue

    shown = {
        "rotary_embedding": ("rope_relative_position_half", "rope_relative_position_interleaved"),
        "sinusoidal_positional_encoding": ("sinusoidal_shift_is_rotation",),
        "multi_head_attention": ("mha_concat_project", "self_attention_permutation_equivariance"),
        "masked_self_attention": ("masked_self_attention_causality",),
        "cross_attention": ("cross_attention_memory_permutation_invariance",),
    }
    proofs = {pr.name: pr for pr in catalogue()}
    for block, names in shown.items():
        text = render(block)
        for name in names:
            assert f"### {name}: proved" in text, (block, name)
            for step in proofs[name].prove().steps:
                assert step.latex in text
        assert "Negative control" in text and "rejected by the same procedure" in text
    assert "None in the proof catalogue" in render("feed_forward")


def test_positional_blocks_show_both_conventions_from_the_spec() -> None:
    rope = render("rotary_embedding")
    assert "`rope_pairing` = `half_split` (canonical)" in rope
    assert "`rope_pairing` = `interleaved`" in rope and r"\theta_{0}" in rope
    pe = render("sinusoidal_positional_encoding")
    assert "`sinusoidal_layout` = `concatenated`" in pe and "tensor2tensor" in pe
    alibi = render("alibi_bias")  # non-power-of-2 heads: 4 slopes of H = 4, then 1/2, 1/8
    assert r"\frac{1}{256} & \frac{1}{2} & \frac{1}{8}" in alibi
    assert "def alibi_slopes" in alibi  # the float64 reference's code


def test_transpec_derive_command_renders_a_layer_block(capsys) -> None:  # type: ignore[no-untyped-def]
    from transpec.cli import main

    assert main(["derive", "feed_forward"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Position-wise feed-forward (feed_forward)")
    assert "`activation` = `gelu_tanh`" in out


def test_the_rendered_derivations_page_is_in_sync() -> None:
    """docs/derivations.md is what ``python -m transpec.spec.derive`` prints (timings aside):
    regenerate it with that command after changing a definition, a kernel or a proof."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "derivations.md"
    text = page.read_text()
    body = text.split("\n", 2)[2]  # after the header comment and its blank line
    rendered = "\n".join(render(block) for block in BLOCKS)

    def untimed(s: str) -> str:
        return re.sub(r"in [0-9.]+ s\b", "in T s", s)

    assert untimed(body) == untimed(rendered), (
        "docs/derivations.md is stale: python -m transpec.spec.derive > docs/derivations.md "
        "(keep its first line)"
    )
