"""Packet inspection: decoders, flows, signatures, detectors and EVE alerts. Pure: no sockets."""
