"""A loaded rule set kept out of the cyclic garbage collector's passes.

An engine's rules, groups and prefilters are made once and live until the next load:
with 15,000 rules, about 300,000 objects the collector tracks. Each full collection walks
them all (measured: 0.24 s with 15,000 rules, the engine stalled meanwhile). The daemon
runs one after each policy load, to give memory back; the interpreter runs one on its own
soon after a load (the objects the load made count as new) and whenever enough objects
have outlived the young generations since the last.

``settle`` runs once an engine is built: one full collection (which also frees what an
earlier engine left, its objects returned to the collector first), then ``gc.freeze``:
every object alive moves to the collector's permanent generation, which no pass walks.
Reference counting frees them as before; only a cycle among them waits for ``unsettle``,
which an engine's owner calls once it lets the engine go (the next collection then walks,
and frees, what it left).
"""

from __future__ import annotations

import gc


def settle() -> None:
    """After an engine is built: collect, then keep every object alive out of later passes."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def unsettle() -> None:
    """After an engine is let go: its objects are walked, and freed, by the next pass."""
    gc.unfreeze()
