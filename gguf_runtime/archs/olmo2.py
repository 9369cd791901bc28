"""OLMo 2: no norm before the sublayers; each sublayer's output is normalised before the residual add, and
queries and keys get an RMSNorm over the whole projection (all heads at once) before RoPE."""

from .base import Architecture

ARCH = Architecture(name="olmo2", rope_style="neox", pre_norms=False, post_norms=True, qk_norm="full")
