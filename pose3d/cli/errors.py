"""Errors the command line reports to the user."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""
