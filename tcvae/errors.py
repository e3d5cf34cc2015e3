"""The one exception type for bad input: the CLI prints it on one screen and exits with code 2."""


class UserError(Exception):
    """Something the user can fix (a param, a file, a checksum). `str(err)` is the whole explanation."""
