"""autotune's own version (the package metadata's, kept in one place)."""

__version__ = "0.1.0"
