"""String helpers."""


def truncate(text, width):
    """Cut ``text`` to at most ``width`` characters."""
    if width < 0:
        raise ValueError("width must be >= 0")
    if len(text) <= width:
        return text
    return text[:width]


def slugify(text):
    """Lower-case ``text`` and join its words with dashes."""
    words = text.lower().split()
    return "-".join(words)


def title_case(text):
    """Capitalise the first letter of every word."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


def is_blank(text):
    """True when ``text`` is empty or only whitespace."""
    return not text.strip()
