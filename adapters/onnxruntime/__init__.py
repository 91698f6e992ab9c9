"""ONNX Runtime as an implementation under test: opset-23 operators on the CPU execution provider.

onnx and onnxruntime are imported when the adapter is instantiated, never when this package is
imported.
"""
