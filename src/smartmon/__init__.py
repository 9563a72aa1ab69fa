"""smartmon: live fleet and connection monitoring from the terminal."""

__version__ = "0.1.0"
