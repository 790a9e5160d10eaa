"""The compiled fast path (``_fastpath.c``), when it is built and not switched off.

The engine's fast path (``InspectionEngine._fast_tcp`` and ``_fast_gtp``: a packet of an
established flow that needs nothing but its counters) has a compiled form that does the
same in one call per packet, and so have its new-flow path (``_unheld``, ``_new_flow``: a
new flow's first segment without payload held as an embryo, an embryo hatched), its flow
lookup's common case and new flows, the TLS records it follows in the segments it takes
(``TlsRecords.walk``), its rule driver (``_rule_hits``), ``appproto.parse_dns`` over UDP,
``appproto.parse_tls_sni``, ``appproto.parse_http_request``, ``tlsinfo.hello_fields`` (a
TLS hello's JA3 and version) and ``decode.decode_packet``
for the common frame (Ethernet / IPv4 carrying TCP or plain UDP, or a GTP-U G-PDU carrying
one); and the prefilters' multi-pattern scan (``Patterns``, whose twin is
``prefilter.TwinPrefilter``). ``setup.py`` builds them in place when gcc and Python's
headers are there; without them (a plain source tree, the container, the Debian package)
the engine runs its pure-Python twin, which gives the same alerts, flows and counters.

``APPLIANCE_INSPECT_CORE=python`` (or ``0``, ``off``) in the environment forces the twin.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from appliance.inspect._fastpath import (
        Decoder,
        DnsParser,
        FastPath,
        HttpParser,
        Patterns,
        RuleHits,
        SniParser,
    )

ENV = "APPLIANCE_INSPECT_CORE"
_OFF = ("0", "off", "python", "no", "false")
_NAME = "appliance.inspect._fastpath"


def switched_off() -> bool:
    """Whether the environment forces the Python twin (``ENV``)."""
    return os.environ.get(ENV, "").strip().lower() in _OFF


def enabled() -> bool:
    """Whether the compiled fast path is built and not switched off, found without loading
    it (an engine loads it on its first packet)."""
    if switched_off():
        return False
    try:
        return importlib.util.find_spec(_NAME) is not None
    except (ImportError, ValueError):
        return False


def _compiled(name: str) -> Any:
    """The compiled module's class ``name``, or None: not built, or switched off by
    ``ENV``."""
    if switched_off():
        return None
    try:
        module = importlib.import_module(_NAME)
    except ImportError:
        return None
    return getattr(module, name, None)


def fast_path_class() -> type[FastPath] | None:
    """The compiled ``FastPath``, or None: not built, or switched off by ``ENV``."""
    return cast("type[FastPath] | None", _compiled("FastPath"))


def decoder_class() -> type[Decoder] | None:
    """The compiled ``Decoder`` (``decode_packet`` for the common frame), as
    ``fast_path_class``."""
    return cast("type[Decoder] | None", _compiled("Decoder"))


def rule_hits_class() -> type[RuleHits] | None:
    """The compiled ``RuleHits`` (the engine's ``_rule_hits`` driver), as
    ``fast_path_class``."""
    return cast("type[RuleHits] | None", _compiled("RuleHits"))


def dns_parser_class() -> type[DnsParser] | None:
    """The compiled ``DnsParser`` (``appproto.parse_dns`` over UDP), as
    ``fast_path_class``."""
    return cast("type[DnsParser] | None", _compiled("DnsParser"))


def sni_parser_class() -> type[SniParser] | None:
    """The compiled ``SniParser`` (``appproto.parse_tls_sni``), as ``fast_path_class``."""
    return cast("type[SniParser] | None", _compiled("SniParser"))


def http_parser_class() -> type[HttpParser] | None:
    """The compiled ``HttpParser`` (``appproto.parse_http_request``), as
    ``fast_path_class``."""
    return cast("type[HttpParser] | None", _compiled("HttpParser"))


def hello_fields_function() -> Callable[[bytes, bool, bool, bool], tuple[Any, Any]] | None:
    """The compiled ``hello_fields`` (``tlsinfo.hello_fields``), as ``fast_path_class``."""
    return cast(
        "Callable[[bytes, bool, bool, bool], tuple[Any, Any]] | None", _compiled("hello_fields")
    )


def tls_walk_function() -> Callable[..., bool | None] | None:
    """The compiled ``tls_walk`` (``TlsRecords.walk``, as the fast path reads the records of
    the segments it takes), as ``fast_path_class``."""
    return cast("Callable[..., bool | None] | None", _compiled("tls_walk"))


def patterns_class() -> type[Patterns] | None:
    """The compiled ``Patterns`` (the prefilters' multi-pattern scan), as
    ``fast_path_class``."""
    return cast("type[Patterns] | None", _compiled("Patterns"))


def available() -> bool:
    """Whether the compiled fast path is built (whatever the switch says)."""
    try:
        from appliance.inspect import _fastpath  # noqa: F401
    except ImportError:
        return False
    return True
