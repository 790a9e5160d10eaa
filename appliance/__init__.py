"""appliance: a lightweight security appliance daemon for edge and MEC nodes."""

__version__ = "0.1.0"
