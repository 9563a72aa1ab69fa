"""Widgets of the smartmon TUI."""
