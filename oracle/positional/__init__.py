"""The token embedding and the positional encodings (sinusoidal, RoPE, ALiBi): reference, tolerance,
strategies, properties."""
