"""`smartmon tui`: the Textual dashboard. Never imports smartmon.server."""
