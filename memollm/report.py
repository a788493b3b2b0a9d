"""Report cache problems through ``warnings`` and the ``memollm`` logger.

Problems of the cache itself (a dir that cannot be written, a corrupt entry) are reported once
per place and kind. A value that cannot be stored warns at every call that returns one (Python's
warning filters show each distinct message once by default): it is about the caller's code, and
each call concerned should be visible to ``pytest.warns`` or ``warnings.catch_warnings``.
"""

from __future__ import annotations

import logging
import threading
import warnings

from .errors import CacheWarning, UncacheableValueWarning

logger = logging.getLogger("memollm")
# A library's logger: records reach the handlers an application configures, and nothing is
# printed when it configures none (the warnings module already shows each problem).
logger.addHandler(logging.NullHandler())
SEEN_MAX = 10_000  # problems remembered; past it they are forgotten and reported once more
_seen: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _first_time(where: str, problem: str) -> bool:
    """Whether ``problem`` at ``where`` is new; memory stays bounded (strange entries, HTTP paths)."""
    with _lock:
        if (where, problem) in _seen:
            return False
        if len(_seen) >= SEEN_MAX:
            _seen.clear()
        _seen.add((where, problem))
        return True


def warn_once(where: str, problem: str, message: str, category: type[Warning] = CacheWarning) -> None:
    """Warn about ``problem`` at ``where`` the first time only; later repeats are logged at debug level."""
    if _first_time(where, problem):
        logger.warning("%s", message)
        warnings.warn(message, category, stacklevel=4)
    else:
        logger.debug("%s", message)


def warn_uncacheable(function_id: str, problem: str, message: str) -> None:
    """An ``UncacheableValueWarning``; only its first occurrence is logged at warning level."""
    first = _first_time(function_id, problem)
    logger.log(logging.WARNING if first else logging.DEBUG, "%s", message)
    warnings.warn(message, UncacheableValueWarning, stacklevel=4)


def reset() -> None:
    """Forget what was reported (tests use this)."""
    with _lock:
        _seen.clear()
