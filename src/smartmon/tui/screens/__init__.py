"""Screens of the smartmon TUI."""
