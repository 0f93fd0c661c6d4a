"""Number helpers."""


def clamp(value, low, high):
    """Limit ``value`` to the range [low, high]."""
    if low > high:
        raise ValueError("low must be <= high")
    return max(low, min(value, high))
