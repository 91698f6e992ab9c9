"""transpec's exceptions: one root, :class:`TranspecError`, for what transpec cannot do as asked.

::

    TranspecError
    ├── UsageError                          (the transpec command: one line, exit status 2)
    ├── AdapterLoadError       (ValueError) an adapter spec that gives no adapter
    ├── AdapterDeclarationError (ValueError) an adapter whose declarations cannot be run
    ├── CaseFileError          (ValueError) a saved case that cannot be read or replayed here
    │   └── CaseFileReadError               one that cannot be read: not a case file, a field
    │                                       missing or of the wrong type, an oversized member
    ├── UnknownComponentError  (ValueError) a component name that is not in the registry
    └── KnownFailuresFileError (ValueError) a known-failures file (--xfails) that is wrong

``except transpec.TranspecError`` catches all of them; the ``ValueError`` ones are still caught
by ``except ValueError``, as before there was a root. A property that an implementation breaks
is not an error of this kind: it is a ``failed`` verdict in the run's result.

Importing this module imports nothing else (no NumPy, Hypothesis, SymPy or torch).
"""

from __future__ import annotations

__all__ = [
    "AdapterDeclarationError",
    "AdapterLoadError",
    "CaseFileError",
    "CaseFileReadError",
    "KnownFailuresFileError",
    "TranspecError",
    "UnknownComponentError",
    "UsageError",
]


class TranspecError(Exception):
    """The root of the exceptions transpec raises about what it was asked to do."""


class UsageError(TranspecError):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class AdapterLoadError(TranspecError, ValueError):
    """An adapter specification could not be turned into an adapter (one-line message)."""


class AdapterDeclarationError(TranspecError, ValueError):
    """An adapter whose declarations a run cannot be planned on (one-line message): a
    ``call_timeout`` that is not a finite number of seconds > 0, ``dtypes`` or ``devices`` that
    are not a tuple of names, ``conventions`` that are not a ``Conventions``, or a declaration
    hook (``available_devices``, ``provides``) that raises."""


class CaseFileError(TranspecError, ValueError):
    """A saved case file that is not one, cannot be read, or cannot be replayed here (a property
    this version does not have, an adapter that cannot run the case)."""


class CaseFileReadError(CaseFileError):
    """A case file that cannot be read at all: not an archive, no metadata, a metadata field
    missing, of the wrong type or unknown, or an archive member over the size limits. The file
    itself is at fault, not the implementation it names (``transpec reproduce``: exit 2)."""


class UnknownComponentError(TranspecError, ValueError):
    """A component name that is not in the registry."""


class KnownFailuresFileError(TranspecError, ValueError):
    """A known-failures file (``--xfails``) that cannot be read, or an entry of it that is not a
    verdict id with its reason (one line: ``FILE:LINE: what is wrong``)."""
