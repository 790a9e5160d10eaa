"""Defaults of ``appliance run`` that the command line and the daemon share.

Only constants: the CLI imports this at every start, so it imports nothing.
"""

RESYNC_INTERVAL = 10.0  # seconds between read-backs of the table (drift repair)
INSPECT_QUEUE = 8192  # packets between capture and the inspection engine
