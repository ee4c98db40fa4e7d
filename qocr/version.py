"""qocr's version, in a module of its own: the HTTP clients' User-Agent reads it without
importing the package's façade (``qocr.Client``)."""

__version__ = "0.1.0"
