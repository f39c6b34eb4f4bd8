"""The errors deploylab raises on purpose: each says what went wrong and what to do."""

__all__ = ["DeploylabError"]


class DeploylabError(Exception):
    """Base class of every error deploylab raises for bad input or a missing resource.

    The message always ends with what the user can do about it, so the CLI prints it
    as is and notebooks show it without a long traceback being the only clue.
    """
