"""Report cache problems once (per place and kind), through ``warnings`` and the ``memollm`` logger."""

from __future__ import annotations

import logging
import threading
import warnings

from .errors import CacheWarning

logger = logging.getLogger("memollm")
_seen: set[tuple[str, str]] = set()
_lock = threading.Lock()


def warn_once(where: str, problem: str, message: str, category: type[Warning] = CacheWarning) -> None:
    """Warn about ``problem`` at ``where`` the first time only; later repeats are logged at debug level."""
    with _lock:
        first = (where, problem) not in _seen
        _seen.add((where, problem))
    if first:
        logger.warning("%s", message)
        warnings.warn(message, category, stacklevel=4)
    else:
        logger.debug("%s", message)


def reset() -> None:
    """Forget what was reported (tests use this)."""
    with _lock:
        _seen.clear()
