"""The old home of the paged KV cache; it now lives in gguf_runtime/kv/. Re-exports for this wave."""

from .errors import ContextLengthError as ContextFullError  # noqa: F401  (one class for "does not fit")
from .errors import PoolFullError  # noqa: F401
from .kv import BLOCK_TOKENS, KV_TYPES, KVCache, KVPool  # noqa: F401
