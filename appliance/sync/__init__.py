"""Hub sync: signed bundles (build, sign, verify), the last-good store, the hub client and
the reference hub server."""
