"""Hugging Face transformers as an implementation under test: its attention functions, RMSNorm
modules and the Llama rotary embedding.

transformers (and torch) are imported when an adapter is instantiated, never when this package
is imported.
"""
