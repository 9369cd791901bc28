"""gguf-runtime: run quantized GGUF language models on the CPU in pure Python + numba.

    from gguf_runtime import LLM, SamplingParams
    llm = LLM(model="models/SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048, n_threads=2)
    print(llm.generate("Explain TCP in one sentence.", SamplingParams(temperature=0))[0].outputs[0].text)
"""

__version__ = "0.1.0"

_EXPORTS = {
    "LLM": "api", "RequestOutput": "api", "CompletionOutput": "api",
    "SamplingParams": "sampling", "GGUFFile": "gguf_file", "GGUFError": "gguf_file",
    "StructuredOutputsParams": "structured.params", "GuidedDecodingParams": "structured.params",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Imported on first use, so `gguf-runtime --help` and `info` do not pay for numba.
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'gguf_runtime' has no attribute {name!r}")
