"""The layers with nn.MultiheadAttention and nn.Transformer*Layer semantics: reference, tolerance
(forward error propagation), strategies, properties."""
