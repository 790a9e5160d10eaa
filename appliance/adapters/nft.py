"""The only module that talks to nftables: libnftables in-process, JSON API."""

from __future__ import annotations

import json
import socket
import struct
from typing import TYPE_CHECKING, Any

from appliance.adapters.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    ack_error,
    dump_answers,
    iter_attrs,
    iter_messages,
    nlattr,
    nlmsg,
)
from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json
from appliance.errors import ApplianceError, KernelError

if TYPE_CHECKING:
    from appliance.adapters.nfsets import NfSets


class NftBackend:
    """Runs libnftables JSON command batches; each ``run`` is one kernel transaction."""

    def __init__(self) -> None:
        try:
            import nftables  # Debian: python3-nftables
        except ImportError:  # pragma: no cover - depends on the machine
            raise ApplianceError(
                "the libnftables Python binding is missing (install python3-nftables)"
            ) from None
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        self._gen_socket: socket.socket | None = None
        self._gen_seq = 0

    def run(self, commands: list[Json]) -> list[Json]:
        """Run ``commands`` as one transaction; KernelError (one line) if refused."""
        if not commands:
            return []
        rc, output, error = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise KernelError(f"the kernel refused the change: {_first_error(error)}")
        if isinstance(output, dict):
            return list(output.get("nftables", []))
        return []

    def generation(self) -> int | None:
        """The ruleset generation of this network namespace: every committed nftables
        transaction (ours or anyone's) changes it. None if it cannot be read."""
        try:
            if self._gen_socket is None:  # kept open: closing a netlink socket is slow
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                sock.settimeout(1.0)
                sock.bind((0, 0))
                self._gen_socket = sock
            self._gen_seq += 1
            message = nlmsg(NFT_MSG_GETGEN, NLM_F_REQUEST, self._gen_seq, NFGENMSG.pack(0, 0, 0))
            self._gen_socket.send(message)
            data = self._gen_socket.recv(4096)
        except OSError:
            if self._gen_socket is not None:
                self._gen_socket.close()
                self._gen_socket = None
            return None
        return parse_generation(data)

    def run_text(self, script: str) -> None:
        """Run an nft script (``nft -f`` syntax) as one transaction."""
        rc, _output, error = self._nft.cmd(script)
        if rc != 0:
            raise KernelError(f"the kernel refused the change: {_first_error(error)}")

    def list_table(self) -> list[Json] | None:
        """Our table as the kernel lists it (with set elements), or None if absent."""
        rc, output, error = self._nft.json_cmd(
            {"nftables": [{"list": {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}}]}
        )
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise KernelError(
                f"cannot read table {TABLE_FAMILY} {TABLE_NAME}: {_first_error(error)}"
            )
        return [obj for obj in output.get("nftables", []) if "metainfo" not in obj]

    def set_elements(self) -> NfSets:
        """The elements of our table's sets over nf_tables netlink, from and to packed
        spans (no JSON), in this network namespace."""
        from appliance.adapters.nfsets import NfSets

        return NfSets(family=TABLE_FAMILY, table=TABLE_NAME)

    def list_structure(self) -> list[Json] | None:
        """Our table without set elements (anonymous sets inline in their rules), or None
        if absent.

        nftables 1.0.6 fetches every set element into its cache for ``list table``, terse
        or not (seconds and hundreds of MiB for 200k elements); a terse ``list ruleset``
        of the family fetches none and lists the same objects in the same order, ours
        kept. If that listing fails, the table is listed terse."""
        self._nft.set_terse_output(True)
        try:
            listed, objects = self._ruleset_structure()
            return objects if listed else self.list_table()
        finally:
            self._nft.set_terse_output(False)

    def _ruleset_structure(self) -> tuple[bool, list[Json] | None]:
        """(listed, our table's objects out of a terse ``list ruleset`` or None if the
        table is absent); listed is False if the listing failed."""
        rc, output, _error = self._nft.json_cmd(
            {"nftables": [{"list": {"ruleset": {"family": TABLE_FAMILY}}}]}
        )
        if rc != 0 or not isinstance(output, dict):
            return False, None
        objects = [obj for obj in output.get("nftables", []) if _of_our_table(obj)]
        if not any("table" in obj for obj in objects):
            return True, None
        return True, objects

    def list_set(self, name: str, elements: bool = True) -> Json | None:
        """One set (with its elements unless ``elements`` is False), or None if absent.

        Without elements the listing costs the same whatever the set's size (terse output).
        """
        query = {"set": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name}}
        if not elements:
            self._nft.set_terse_output(True)
        try:
            rc, output, _error = self._nft.json_cmd({"nftables": [{"list": query}]})
        finally:
            if not elements:
                self._nft.set_terse_output(False)
        if rc != 0:
            return None
        for obj in output.get("nftables", []):
            if "set" in obj:
                return dict(obj["set"])
        return None

    def list_counters(self) -> dict[str, tuple[int, int]]:
        """Every named counter of our table: name -> (packets, bytes), in one read: a
        netlink dump of the table's counter objects (libnftables would first fetch every
        set element of the table into its cache), else through libnftables."""
        counters = self._dump_counters()
        return counters if counters is not None else self._list_counters()

    def dump_counters(self) -> dict[str, tuple[int, int]] | None:
        """The counters by the netlink dump alone, on a socket of its own: safe on another
        thread than the one using libnftables. None when the dump fails."""
        return self._dump_counters()

    def _dump_counters(self) -> dict[str, tuple[int, int]] | None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError:
            return None
        with sock:
            sock.settimeout(2.0)
            try:
                sock.bind((0, 0))
                body = NFGENMSG.pack(NFPROTO_INET, 0, 0)
                body += nlattr(NFTA_OBJ_TABLE, TABLE_NAME.encode() + b"\0")
                body += nlattr(NFTA_OBJ_TYPE, struct.pack(">I", NFT_OBJECT_COUNTER))
                request = nlmsg(NFT_MSG_GETOBJ, NLM_F_REQUEST | NLM_F_DUMP, 1, body)
                counters: dict[str, tuple[int, int]] = {}
                for kind, message in dump_answers(sock, request, 1):
                    if kind == NFT_MSG_NEWOBJ:
                        found = parse_counter(message)
                        if found is not None:
                            counters[found[0]] = found[1]
                return counters
            except OSError:
                return None

    def _list_counters(self) -> dict[str, tuple[int, int]]:
        rc, output, _error = self._nft.json_cmd(
            {"nftables": [{"list": {"counters": {"family": TABLE_FAMILY, "table": TABLE_NAME}}}]}
        )
        if rc != 0:
            return {}
        counters: dict[str, tuple[int, int]] = {}
        for obj in output.get("nftables", []):
            body: dict[str, Any] | None = obj.get("counter")
            if body and body.get("table") == TABLE_NAME:
                counters[body["name"]] = (int(body["packets"]), int(body["bytes"]))
        return counters


def _of_our_table(obj: Json) -> bool:
    """Whether a listed object (not metainfo) belongs to table ``inet appliance``."""
    for kind, body in obj.items():
        if kind == "metainfo" or not isinstance(body, dict):
            return False
        name = body.get("name") if kind == "table" else body.get("table")
        return bool(body.get("family") == TABLE_FAMILY and name == TABLE_NAME)
    return False


NETLINK_NETFILTER = 12
NFT_MSG_GETGEN = (10 << 8) | 16  # nftables subsystem, get generation
NFT_MSG_NEWGEN = (10 << 8) | 15
NFTA_GEN_ID = 1
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id


NFT_MSG_GETOBJ = (10 << 8) | 19
NFT_MSG_NEWOBJ = (10 << 8) | 18
NFPROTO_INET = 1
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFT_OBJECT_COUNTER = 1
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2


def parse_counter(body: bytes) -> tuple[str, tuple[int, int]] | None:
    """(name, (packets, bytes)) of a NEWOBJ message of a counter of our table."""
    table = name = None
    packets = octets = 0
    kind = None
    for attr, payload in iter_attrs(body, NFGENMSG.size):
        if attr == NFTA_OBJ_TABLE:
            table = payload.rstrip(b"\0").decode()
        elif attr == NFTA_OBJ_NAME:
            name = payload.rstrip(b"\0").decode()
        elif attr == NFTA_OBJ_TYPE and len(payload) >= 4:
            kind = struct.unpack_from(">I", payload)[0]
        elif attr == NFTA_OBJ_DATA:
            for inner, value in iter_attrs(payload):
                if inner == NFTA_COUNTER_PACKETS and len(value) >= 8:
                    packets = struct.unpack_from(">Q", value)[0]
                elif inner == NFTA_COUNTER_BYTES and len(value) >= 8:
                    octets = struct.unpack_from(">Q", value)[0]
    if table != TABLE_NAME or name is None or kind != NFT_OBJECT_COUNTER:
        return None
    return name, (packets, octets)


def parse_generation(data: bytes) -> int | None:
    """The generation id in a NEWGEN answer (None: an error or no id)."""
    for kind, _seq, body in iter_messages(data):
        if kind == NLMSG_ERROR and ack_error(body):
            return None
        if kind == NFT_MSG_NEWGEN:
            for attr, payload in iter_attrs(body, NFGENMSG.size):
                if attr == NFTA_GEN_ID and len(payload) >= 4:
                    return int(struct.unpack_from(">I", payload)[0])
    return None


# Kernel errno texts that say little to an operator, and what they mean for our table.
_EXPLAINED = {
    "Too many open files in system": "a set is full (more elements than its size)",
    "No such file or directory": "an object it refers to does not exist",
    "Device or resource busy": "an object is still in use",
}


def _first_error(error: str) -> str:
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for line in lines:
        if "Error:" in line:
            message = line.split("Error:", 1)[1].strip()
            for errno_text, meaning in _EXPLAINED.items():
                if message.endswith(errno_text):
                    return f"{message} ({meaning})"
            return message
    return lines[0] if lines else "unknown error"


def dumps(commands: list[Json]) -> str:
    return json.dumps({"nftables": commands}, sort_keys=False)
