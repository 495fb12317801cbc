"""Errors a user can fix by changing an override: entry points print them as one line."""


class UserError(Exception):
    """Bad input or missing data; the message says which override fixes it."""
