"""A module that takes long to import (a framework loading its kernels): it writes the file
named by ``SLOW_IMPORT_MARKER`` when its import begins, then sleeps, so that a test can stop
``transpec check`` while the adapter is still loading -- before the run has begun."""

from __future__ import annotations

import os
import time
from pathlib import Path

from transpec.adapters.numpy.adapter import NumpyAdapter

Path(os.environ["SLOW_IMPORT_MARKER"]).write_text("importing")
time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "60")))


class Loaded(NumpyAdapter):
    """Correct NumPy, once its module has imported."""

    name = "slow-import"
