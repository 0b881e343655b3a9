"""The error of bad or missing input data (every module of :mod:`nmt.data` raises it)."""


class DataError(ValueError):
    """Bad input data or a missing corpus; the message names file, line and problem."""
