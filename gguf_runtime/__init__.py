"""gguf-runtime: run quantized GGUF language models on the CPU in pure Python + numba."""

__version__ = "0.1.0"
