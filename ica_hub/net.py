"""One quick look at an HTTP endpoint before a long run depends on it."""

from __future__ import annotations


def unreachable(url: str, timeout_s: float = 5.0) -> str | None:
    """Why ``url`` cannot be reached now (a transport error: refused, unknown host, timeout),
    or None. Any HTTP answer, even an error status, counts as reachable."""
    import httpx

    try:
        httpx.head(url, timeout=timeout_s)
    except httpx.HTTPError as error:
        first_line = str(error).splitlines()[0] if str(error) else "no answer"
        return f"{type(error).__name__}: {first_line}"
    return None
