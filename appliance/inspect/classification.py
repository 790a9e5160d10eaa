"""Classification types: ``classtype`` -> (category text, priority), as Suricata ships them.

The priority becomes the EVE ``alert.severity`` (1 is the most severe); a rule without a
classtype has priority 3.
"""

from __future__ import annotations

from appliance.errors import RuleFileError, UsageError

DEFAULT_PRIORITY = 3

CLASSTYPES: dict[str, tuple[str, int]] = {
    "not-suspicious": ("Not Suspicious Traffic", 3),
    "unknown": ("Unknown Traffic", 3),
    "bad-unknown": ("Potentially Bad Traffic", 2),
    "attempted-recon": ("Attempted Information Leak", 2),
    "successful-recon-limited": ("Information Leak", 2),
    "successful-recon-largescale": ("Large Scale Information Leak", 2),
    "attempted-dos": ("Attempted Denial of Service", 2),
    "successful-dos": ("Denial of Service", 2),
    "attempted-user": ("Attempted User Privilege Gain", 1),
    "unsuccessful-user": ("Unsuccessful User Privilege Gain", 1),
    "successful-user": ("Successful User Privilege Gain", 1),
    "attempted-admin": ("Attempted Administrator Privilege Gain", 1),
    "successful-admin": ("Successful Administrator Privilege Gain", 1),
    "rpc-portmap-decode": ("Decode of an RPC Query", 2),
    "shellcode-detect": ("Executable code was detected", 1),
    "string-detect": ("A suspicious string was detected", 3),
    "suspicious-filename-detect": ("A suspicious filename was detected", 2),
    "suspicious-login": ("An attempted login using a suspicious username was detected", 2),
    "system-call-detect": ("A system call was detected", 2),
    "tcp-connection": ("A TCP connection was detected", 4),
    "trojan-activity": ("A Network Trojan was detected", 1),
    "unusual-client-port-connection": ("A client was using an unusual port", 2),
    "network-scan": ("Detection of a Network Scan", 3),
    "denial-of-service": ("Detection of a Denial of Service Attack", 2),
    "non-standard-protocol": ("Detection of a non-standard protocol or event", 2),
    "protocol-command-decode": ("Generic Protocol Command Decode", 3),
    "web-application-activity": ("access to a potentially vulnerable web application", 2),
    "web-application-attack": ("Web Application Attack", 1),
    "misc-activity": ("Misc activity", 3),
    "misc-attack": ("Misc Attack", 2),
    "icmp-event": ("Generic ICMP event", 3),
    "inappropriate-content": ("Inappropriate Content was Detected", 1),
    "policy-violation": ("Potential Corporate Privacy Violation", 1),
    "default-login-attempt": ("Attempt to login by a default username and password", 2),
    "targeted-activity": ("Targeted Malicious Activity was Detected", 1),
    "exploit-kit": ("Exploit Kit Activity Detected", 1),
    "external-ip-check": ("Device Retrieving External IP Address Detected", 2),
    "domain-c2": ("Domain Observed Used for C2 Detected", 1),
    "pup-activity": ("Possibly Unwanted Program Detected", 2),
    "credential-theft": ("Successful Credential Theft Detected", 1),
    "social-engineering": ("Possible Social Engineering Attempted", 2),
    "coin-mining": ("Crypto Currency Mining Activity Detected", 2),
    "command-and-control": ("Malware Command and Control Activity Detected", 1),
}


def read_classification(path: str) -> dict[str, tuple[str, int]]:
    """A ``classification.config`` (``config classification: NAME,DESCRIPTION,PRIORITY``
    lines): its classtypes over the shipped ones. Bad lines: ``RuleFileError`` FILE:LINE."""
    table = dict(CLASSTYPES)
    for line, value in _config_lines(path, "classification"):
        parts = [p.strip() for p in value.rsplit(",", 1)]
        name, _, description = parts[0].partition(",")
        try:
            priority = int(parts[1]) if len(parts) == 2 else -1
        except ValueError:
            priority = -1
        if not name.strip() or not description.strip() or not 1 <= priority <= 255:
            raise RuleFileError(path, line, f"expected NAME,DESCRIPTION,PRIORITY, got {value!r}")
        table[name.strip()] = (description.strip(), priority)
    return table


def read_references(path: str) -> dict[str, str]:
    """A ``reference.config`` (``config reference: SYSTEM URL`` lines): URL prefixes by
    reference system."""
    table: dict[str, str] = {}
    for line, value in _config_lines(path, "reference"):
        system, _, url = value.partition(" ")
        if not system.strip() or not url.strip():
            raise RuleFileError(path, line, f"expected SYSTEM URL, got {value!r}")
        table[system.strip().lower()] = url.strip()
    return table


def _config_lines(path: str, kind: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {kind} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RuleFileError(path, 1, f"not UTF-8 text (byte {exc.start})") from None
    out = []
    prefix = f"config {kind}:"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(prefix):
            raise RuleFileError(path, number, f"expected '{prefix} ...'")
        out.append((number, line[len(prefix) :].strip()))
    return out
