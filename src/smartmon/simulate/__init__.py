"""A virtual fleet of smart meters and gateways: `model` (one device), `fleet` (many, on
asyncio + httpx) and `command` (`smartmon simulate`). Kept import-free, so the CLI can
register the command without loading httpx."""
