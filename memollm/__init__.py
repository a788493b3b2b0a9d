"""memollm: cache calls to LLM providers on disk, in memory or in Redis.

Put ``@cache_llm`` on a helper that calls a provider; identical calls are answered from the
cache (streams included), with modes for deterministic, offline test runs.
"""

from .core import Explanation, sample
from .decorator import CachedFunction, cache_llm
from .errors import CacheMiss, CacheWarning, UncacheableValueWarning
from .modes import Mode, cache_mode
from .observers import CallRecord, observe
from .stats import CacheInfo

__version__ = "0.1.0"

__all__ = [
    "CacheInfo",
    "CacheMiss",
    "CacheWarning",
    "CachedFunction",
    "CallRecord",
    "Explanation",
    "Mode",
    "UncacheableValueWarning",
    "cache_llm",
    "cache_mode",
    "observe",
    "sample",
    "__version__",
]
