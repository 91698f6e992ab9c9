"""Hypothesis settings for a conformance run: the ``ci`` and ``thorough`` profiles.

==============  =====================================  =======================================
                ``ci`` (default)                       ``thorough``
==============  =====================================  =======================================
examples        :data:`CI_MAX_EXAMPLES` per property   :data:`THOROUGH_MAX_EXAMPLES`
seed            fixed (0 unless ``--seed``): the same  drawn at random unless ``--seed``; the
                examples on every run, a regression    header prints it, so a run can be
                gate                                   repeated
database        none                                   ``.hypothesis/`` (failures found once
                                                       are replayed first next time)
deadline        none                                   none
==============  =====================================  =======================================

With the environment variable ``CI`` set to a true value, Hypothesis's own ``ci`` profile
semantics apply to every profile: derandomized (a fixed seed), no deadline, no example database.
Each (component, property, dtype, device) gets its own seed derived from the run's seed and its
name, so selecting a subset of the run replays exactly the examples of the full run.

Importing this module does not import Hypothesis.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

PROFILES: tuple[str, ...] = ("ci", "thorough")

#: examples per property in the ``ci`` profile (the default run on CPU takes well under a minute)
CI_MAX_EXAMPLES = 12
#: examples per property in the ``thorough`` profile
THOROUGH_MAX_EXAMPLES = 300
#: where the ``thorough`` profile keeps the examples that failed
DATABASE_DIR = ".hypothesis/transpec"
#: the long-context regime of attention per profile: the longest key sequence and the most
#: score elements (B·Hq·Lq·Lk) of one example. ``ci`` keeps it a few milliseconds per example
#: (still past the 256 and 512 tile boundaries); ``thorough`` reaches 128k keys.
LONG_CONTEXT_MAX_KEYS: dict[str, int] = {"ci": 600, "thorough": 131072}
LONG_CONTEXT_MAX_SCORES: dict[str, int] = {"ci": 1 << 14, "thorough": 1 << 30}
#: the long-input regime of the norms per profile: the most elements of x in one example.
#: ``thorough`` goes past the 2²⁵ elements above which the reference samples the rows by itself
#: (``NORM_SAMPLING_THRESHOLD``); ``ci`` keeps it a few milliseconds per example
LONG_NORM_MAX_ELEMENTS: dict[str, int] = {"ci": 1 << 14, "thorough": (1 << 25) + (1 << 22)}


def ci_environment() -> bool:
    """True when the environment variable ``CI`` is set to a true value (as Hypothesis reads it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Profile:
    """Resolved settings of a run: which profile, its seed and example budget."""

    name: str
    seed: int
    max_examples: int
    database: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.name,
            "seed": self.seed,
            "max_examples": self.max_examples,
            "database": self.database,
            "ci_environment": ci_environment(),
        }


def resolve(
    name: str = "ci", *, seed: int | None = None, max_examples: int | None = None
) -> Profile:
    """The settings of profile ``name`` with the user's overrides (``ValueError`` when invalid)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    if max_examples is not None and (isinstance(max_examples, bool) or int(max_examples) < 1):
        raise ValueError(f"max_examples must be a positive integer, got {max_examples!r}")
    if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ci = ci_environment()
    if name == "ci":
        budget = CI_MAX_EXAMPLES
        database = None
        base_seed = 0 if seed is None else int(seed)
    else:
        budget = THOROUGH_MAX_EXAMPLES
        database = None if ci else DATABASE_DIR
        base_seed = int(seed) if seed is not None else (0 if ci else random.randrange(2**32))
    return Profile(
        name=name,
        seed=base_seed,
        max_examples=int(max_examples) if max_examples is not None else budget,
        database=database,
    )


def case_seed(profile: Profile, *parts: str) -> int:
    """The seed of one (component, property, dtype, device): a hash of the run seed and names."""
    text = "\x1f".join((str(profile.seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def hypothesis_settings(profile: Profile) -> Any:
    """A ``hypothesis.settings`` object for one property under ``profile``."""
    from hypothesis import HealthCheck, Phase, Verbosity, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    database = DirectoryBasedExampleDatabase(profile.database) if profile.database else None
    return settings(
        max_examples=profile.max_examples,
        deadline=None,
        database=database,
        derandomize=False,  # the seed is given explicitly (see case_seed)
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
