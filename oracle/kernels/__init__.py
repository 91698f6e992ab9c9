"""The kernels generated from the SymPy definitions: softmax, attention, LayerNorm, RMSNorm -- their
float64 and 40-digit references, tolerance, strategies, properties and the emulation of correct
low-precision kernels."""
