"""The long-running daemon: asyncio wiring around the engine (``appliance run``)."""
