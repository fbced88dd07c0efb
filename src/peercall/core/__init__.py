"""The pure core: call state and its rules. No asyncio, no I/O, no clock of its own: time comes in as `now`."""
