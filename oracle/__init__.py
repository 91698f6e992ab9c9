"""transpec.oracle: references, tolerances, properties, strategies, the harness, the profiles.

Importing this package imports neither SymPy nor torch. The run, its reports, case files, the
CLI and the pytest plugin are the user-facing layer above it (:mod:`transpec.runs`,
:mod:`transpec.reports`, :mod:`transpec.cases`, :mod:`transpec.cli`, :mod:`transpec.plugin`);
nothing here imports them.
"""
