"""KV-cached batched group rollouts."""
from .generate import Completion, generate
from .kv_cache import SharedPrefixKVCache

__all__ = ["Completion", "generate", "SharedPrefixKVCache"]
