"""The version of specaware (the package root re-exports it as `specaware.__version__`)."""
__version__ = "0.1.0"
