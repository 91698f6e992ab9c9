"""A deliberately wrong layer implementation for the CLI tests, loaded as
``cli_layer_fixtures:NAME`` (the tests put this directory on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.adapters.numpy.adapter import NumpyAdapter

#: the activation the wrong feed-forward computes instead of the one it is asked for
SWAPPED = {"relu": "gelu", "gelu": "relu", "gelu_tanh": "relu"}


class WrongActivationFeedForward(NumpyAdapter):
    """The NumPy feed-forward with the activations swapped (GELU where ReLU is asked and the
    reverse): a classic configuration bug; everything else is NumPy's correct code."""

    name = "wrong-activation"

    def feed_forward(
        self, x: np.ndarray, params: Mapping[str, Any], activation: str = "relu"
    ) -> np.ndarray:
        return super().feed_forward(x, params, SWAPPED.get(activation, activation))
