"""The cache core shared by every front door (decorator, HTTP transports, LangChain adapter)."""

from .cache import MISSING, Cache, report, request_tree
from .explain import Candidate, Difference, Explanation
from .options import CacheOptions, resolve, resolve_store
from .samples import sample

__all__ = ["MISSING", "Cache", "Candidate", "Difference", "Explanation", "CacheOptions", "report", "request_tree", "resolve", "resolve_store", "sample"]
