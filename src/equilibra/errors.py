"""Errors that reach the user as one clear line (CLI exit code 2, HTTP 4xx)."""


class EquilibraError(Exception):
    """A problem with the user's input or configuration, not a bug in Equilibra."""
