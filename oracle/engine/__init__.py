"""The shared engine of the oracle: the harness that calls an implementation, the one comparison,
the relation helper for metamorphic bounds, the error model (γ_n, η, units), dtypes, outcomes and
profiles."""
