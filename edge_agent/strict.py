"""One check for every reader that refuses keys it does not know (config, model metadata, gate policy).

A key that is silently dropped is a setting that silently does nothing, or a newer model read wrongly by
an older agent. Each caller keeps its own error type and message; only the check itself lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def reject_unknown(
    keys: Iterable[str],
    known: Iterable[str],
    message: Callable[[list[str]], str],
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error(message(unknown))``, unknown keys sorted, when ``keys`` holds any not in ``known``."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise error(message(unknown))
