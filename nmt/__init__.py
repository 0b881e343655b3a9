"""nmt: an end-to-end neural machine translation trainer."""

__version__ = "0.1.0"
