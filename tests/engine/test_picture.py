"""The picture of a failure: the error/tolerance map (the slice of the worst element, max-pooled
when large), the mask that was applied, and that it is made once per failed verdict (never
while Hypothesis shrinks)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from transpec.oracle.engine import picture as pic
from transpec.oracle.engine.picture import Evidence, Picture
from transpec.spec.conventions import CANONICAL


def test_ratio_map_follows_the_comparison_rule_and_marks_non_finite_mismatches() -> None:
    actual = np.array([1.0, 2.0, np.nan, np.inf, np.nan, 5.0, 3.0])
    expected = np.array([1.0, 1.0, 1.0, 1.0, np.nan, 5.0, 2.0])
    bound = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    ratio = pic.ratio_map(actual, expected, bound)
    assert ratio[0] == 0.0 and ratio[1] == 2.0
    assert np.isinf(ratio[2]) and np.isinf(ratio[3])  # NaN/inf where the reference is finite
    assert np.isnan(ratio[4])  # NaN where NaN belongs: nothing compared
    assert ratio[5] == 0.0  # a zero bound and no error
    assert np.isinf(ratio[6])  # a zero bound demands equality


def test_max_pool_keeps_the_worst_element_of_each_block() -> None:
    plane = np.zeros((300, 10))
    plane[257, 3] = 7.0
    plane[0, 0] = np.nan
    pooled, pool = pic.max_pool(plane)
    assert pool == (3, 1) and pooled.shape == (100, 10)
    assert pooled[257 // 3, 3] == 7.0
    assert pooled[0, 0] == 0.0  # NaN ignored next to compared elements
    assert pooled.max() == 7.0 and np.count_nonzero(pooled) == 1
    small, small_pool = pic.max_pool(np.ones((128, 128)))
    assert small_pool == (1, 1) and small.shape == (128, 128)


def test_the_map_is_the_slice_of_the_worst_element_with_its_cell() -> None:
    shape = (2, 3, 5, 4)
    expected = np.zeros(shape)
    actual = np.zeros(shape)
    actual[1, 2, 3, 1] = 10.0
    actual[0, 0, 0, 0] = 1.0  # another slice: not drawn
    evidence = Evidence(actual, expected, 0.5, (1, 2, 3, 1))
    p = evidence.picture()
    assert p.slice == (1, 2) and p.shape == shape and p.pool == (1, 1)
    assert np.array(p.ratio).shape == (5, 4)
    assert p.ratio[3][1] == 20.0 and sum(map(sum, p.ratio)) == 20.0
    assert p.worst == (3, 1) and p.mask is None


def test_a_large_output_is_pooled_and_the_worst_cell_follows() -> None:
    expected = np.zeros((1, 1, 1000, 64))
    actual = expected.copy()
    actual[0, 0, 999, 63] = 1.0
    p = Evidence(actual, expected, 0.01, (0, 0, 999, 63)).picture()
    assert p.pool == (8, 1)
    assert np.array(p.ratio).shape == (125, 64)
    assert p.worst == (124, 63) and p.ratio[124][63] == 100.0


def _attention_args(lq: int, lk: int, **extra: object) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "q": rng.standard_normal((2, 2, lq, 3)),
        "k": rng.standard_normal((2, 2, lk, 3)),
        "v": rng.standard_normal((2, 2, lk, 3)),
        "attn_mask": None,
        "is_causal": False,
        "scale": None,
        "enable_gqa": False,
        **extra,
    }


def _seen(*args: object, **kwargs: object) -> tuple[np.ndarray, str]:
    view = pic.visible_keys(*args, **kwargs)  # type: ignore[arg-type]
    assert view is not None
    return view.visible, view.note


def test_the_causal_mask_is_drawn_under_the_declared_alignment() -> None:
    args = _attention_args(3, 5, is_causal=True)
    top_left, note = _seen(args, CANONICAL, (0, 0))
    np.testing.assert_array_equal(top_left, np.tril(np.ones((3, 5))))
    assert "top_left" in note
    bottom = dataclasses.replace(CANONICAL, causal_alignment="bottom_right")
    bottom_right, note = _seen(args, bottom, (0, 0))
    np.testing.assert_array_equal(bottom_right, np.tril(np.ones((3, 5)), k=2))
    assert "j <= i + 2" in note


def test_boolean_and_additive_masks_are_drawn_in_their_declared_meaning() -> None:
    keep = np.ones((2, 1, 3, 4), dtype=bool)
    keep[1, :, :, 2:] = False  # batch 1 pads its last two keys
    args = _attention_args(3, 4, attn_mask=keep)
    seen, _ = _seen(args, CANONICAL, (1, 0))
    np.testing.assert_array_equal(seen, np.tile([1.0, 1.0, 0.0, 0.0], (3, 1)))
    seen0, _ = _seen(args, CANONICAL, (0, 1))
    assert seen0.min() == 1.0
    # an adapter that declares bool_mask="ignore" was sent ~keep: the same keys are hidden
    ignore = dataclasses.replace(CANONICAL, bool_mask="ignore")
    sent = _attention_args(3, 4, attn_mask=~keep)
    flipped, note = _seen(sent, ignore, (1, 0))
    np.testing.assert_array_equal(flipped, seen)
    assert "bool_mask=ignore" in note
    additive = np.zeros((3, 4))
    additive[:, 0] = -np.inf
    additive[:, 1] = -3.0  # a finite bias hides nothing
    view = pic.visible_keys(_attention_args(3, 4, attn_mask=additive), CANONICAL, (0, 0))
    assert view is not None and view.biased is not None
    np.testing.assert_array_equal(view.visible, np.tile([0, 1, 1, 1], (3, 1)))
    np.testing.assert_array_equal(view.biased, np.tile([0, 1, 0, 0], (3, 1)))  # drawn amber
    assert "additive" in view.note and "finite negative" in view.note
    assert pic.visible_keys(_attention_args(3, 4), CANONICAL, (0, 0)) is None


def test_a_layers_masks_combine_the_attention_mask_and_the_key_padding() -> None:
    causal = np.triu(np.ones((3, 3), dtype=bool), k=1)  # True hides (nn.MultiheadAttention)
    padding = np.array([[False, False, False], [False, False, True]])
    args = {"query": np.zeros((2, 3, 4)), "attn_mask": causal, "key_padding_mask": padding}
    args["batch_first"] = True
    seen, note = _seen(args, CANONICAL, (1,))
    np.testing.assert_array_equal(seen, [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    assert "key_padding_mask" in note
    # a decoder's cross-attention padding alone: one row per query
    memory = {"tgt": np.zeros((2, 1, 4)), "memory_key_padding_mask": padding}
    seen, note = _seen(memory, CANONICAL, (1,), queries=2)
    np.testing.assert_array_equal(seen, [[1, 1, 0], [1, 1, 0]])
    assert note.startswith("memory_key_padding_mask")
    # a float mask with a finite fill (finfo.min added): visible, and marked as biased
    fill = np.where(causal, np.finfo(np.float32).min, 0.0)
    view = pic.visible_keys({"query": np.zeros((1, 3, 4)), "attn_mask": fill}, CANONICAL, (0,))
    assert view is not None and view.biased is not None
    np.testing.assert_array_equal(view.visible, np.ones((3, 3)))
    np.testing.assert_array_equal(view.biased, causal)


def test_a_pooled_mask_shows_the_fraction_of_visible_keys() -> None:
    args = _attention_args(4, 256, is_causal=True)
    args["q"] = np.zeros((1, 1, 4, 3))
    args["k"] = np.zeros((1, 1, 256, 3))
    args["v"] = np.zeros((1, 1, 256, 3))
    expected = np.zeros((1, 1, 4, 3))
    p = Evidence(
        expected + 1, expected, 0.5, (0, 0, 2, 1), args=args, conventions=CANONICAL
    ).picture()
    assert p.mask is not None and p.mask_pool == (1, 2)
    assert np.array(p.mask).shape == (4, 128)
    assert p.mask[3][:3] == [1.0, 1.0, 0.0]  # query 3 sees keys 0..3: two whole blocks
    assert p.mask[2][:3] == [1.0, 0.5, 0.0]  # keys 0..2: half of the second block
    assert p.mask[0][:2] == [0.5, 0.0]  # query 0 sees key 0, half of block 0


def test_the_picture_survives_json() -> None:
    expected = np.zeros((2, 3))
    actual = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 0.0]])
    p = Evidence(actual, expected, 0.25, (0, 2)).picture()
    text = json.dumps(p.to_dict(), allow_nan=False)
    back = Picture.from_dict(json.loads(text))
    assert back.shape == p.shape and back.worst == p.worst
    assert np.isinf(back.ratio[0][1]) and back.ratio[0][2] == 4.0


# -- in a run -----------------------------------------------------------------------------------


def test_a_failed_verdict_carries_the_picture_made_once_after_shrinking(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corpus import entry

    from transpec.runs import run

    made: list[int] = []
    original = Evidence.picture

    def counted(self: Evidence, **kwargs: object) -> Picture:
        made.append(1)
        return original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Evidence, "picture", counted)
    result = run(
        entry("causal_sees_next_key").make(),
        components=["attention"],
        properties=["equivalence", "causality", "shape_dtype"],
        dtypes=["float32"],
        failures_dir=None,
    )
    by_name = {v.property: v for v in result.verdicts}
    assert by_name["shape_dtype"].status == "passed" and by_name["shape_dtype"].picture is None
    failed = [by_name["equivalence"], by_name["causality"]]
    assert all(v.status == "failed" for v in failed)
    assert len(made) == 2  # once per failed verdict, none for the failures met while shrinking
    eq = by_name["equivalence"].picture
    assert eq is not None and eq["mask"] is not None
    assert "causal" in eq["mask_note"]
    # the mask is the reference's: query i sees keys 0..i (the chaff also saw key i + 1)
    mask = np.array(eq["mask"])
    rows, keys = mask.shape
    assert eq["mask_pool"] == [1, 1]
    np.testing.assert_array_equal(mask, np.tril(np.ones((rows, keys))))
    assert max(max(row) for row in np.array(eq["ratio"]).tolist()) > 1
    relation = by_name["causality"].picture
    assert relation is not None and "relation" in relation["note"]
    assert by_name["equivalence"].to_dict()["picture"] == eq
