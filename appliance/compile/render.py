"""The nft text form of the compiled table (what ``appliance compile`` prints). Pure.

It renders exactly the subset of libnftables JSON that ``compile.ruleset`` emits, as a
script ``nft -f`` loads: the same table the JSON path would create.
"""

from __future__ import annotations

from typing import Any

from appliance.compile.nftjson import Json

_QUOTED_META = ("iifname", "oifname", "iif", "oif", "sdifname")
_META_PLAIN = ("iif", "oif", "iifname", "oifname", "mark")


def render_table(objects: list[Json], elements: dict[str, list[Any]] | None = None) -> str:
    """nft syntax for a table definition (``objects`` as from ``compile_profile``).

    ``elements`` maps set names to JSON element values, written into the set bodies.
    """
    elements = elements or {}
    table = objects[0]["table"]
    lines = [f"table {table['family']} {table['name']} {{"]
    chains: dict[str, list[str]] = {}
    chain_heads: list[tuple[str, list[str]]] = []
    for obj in objects[1:]:
        kind, body = next(iter(obj.items()))
        if kind == "counter":
            lines += [f"\tcounter {_name(body['name'])} {{", "\t}", ""]
        elif kind == "limit":
            lines += [f"\tlimit {_name(body['name'])} {{", f"\t\trate {_rate(body)}", "\t}", ""]
        elif kind == "set":
            lines += [*_set(body, elements.get(body["name"], [])), ""]
        elif kind == "flowtable":
            lines += [*_flowtable(body), ""]
        elif kind == "chain":
            head = []
            if "hook" in body:
                head.append(
                    f"\t\ttype {body['type']} hook {body['hook']} priority {body['prio']};"
                    f" policy {body['policy']};"
                )
            chain_heads.append((body["name"], head))
            chains[body["name"]] = []
        elif kind == "rule":
            chains[body["chain"]].append(f"\t\t{render_rule(body)}")
        else:
            raise ValueError(f"cannot render {kind!r}")
    for name, head in chain_heads:
        lines.append(f"\tchain {_name(name)} {{")
        lines += head + chains[name]
        lines += ["\t}", ""]
    if lines[-1] == "":
        lines.pop()
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_rule(rule: Json) -> str:
    text = " ".join(_expr(expr) for expr in rule["expr"])
    if rule.get("comment"):
        text += f" comment {_quote(rule['comment'])}"
    return text


def _set(body: Json, elements: list[Any]) -> list[str]:
    lines = [f"\tset {_name(body['name'])} {{", f"\t\ttype {body['type']}"]
    if body.get("flags"):
        lines.append(f"\t\tflags {','.join(body['flags'])}")
    if "timeout" in body:
        lines.append(f"\t\ttimeout {body['timeout']}s")
    if "size" in body:
        lines.append(f"\t\tsize {body['size']}")
    if elements:
        quoted = body["type"] == "ifname"
        items = [_element(e, quoted) for e in elements]
        lines.append(f"\t\telements = {{ {', '.join(items)} }}")
    lines.append("\t}")
    return lines


def _flowtable(body: Json) -> list[str]:
    devices = [body["dev"]] if isinstance(body["dev"], str) else body["dev"]
    return [
        f"\tflowtable {_name(body['name'])} {{",
        f"\t\thook {body['hook']} priority {body['prio']}",
        f"\t\tdevices = {{ {', '.join(_quote(d) for d in devices)} }}",
        "\t}",
    ]


def _element(value: Any, quoted: bool) -> str:
    if isinstance(value, dict) and "elem" in value:
        elem = value["elem"]
        text = _element(elem["val"], quoted)
        if "timeout" in elem:
            text += f" timeout {elem['timeout']}s"
        if "comment" in elem:
            text += f" comment {_quote(elem['comment'])}"
        return text
    return _value(value, quoted)


def _expr(expr: Json) -> str:
    kind, body = next(iter(expr.items()))
    if kind == "match":
        return _match(body)
    if kind in ("accept", "drop", "return"):
        return kind
    if kind in ("jump", "goto"):
        return f"{kind} {_name(body['target'])}"
    if kind == "counter":
        return f"counter name {_quote(body)}" if isinstance(body, str) else "counter"
    if kind == "limit":
        return (
            f"limit name {_quote(body)}" if isinstance(body, str) else f"limit rate {_rate(body)}"
        )
    if kind == "log":
        if not body:
            return "log"
        if "group" in body:
            snaplen = f" snaplen {body['snaplen']}" if "snaplen" in body else ""
            return f"log group {body['group']}{snaplen}"
        return f"log prefix {_quote(body['prefix'])}"
    if kind == "queue":
        flags = f" flags {','.join(body['flags'])}" if body.get("flags") else ""
        return f"queue{flags} to {_value(body['num'])}"
    if kind == "reject":
        if body is None:
            return "reject"
        if body["type"] == "tcp reset":
            return "reject with tcp reset"
        return f"reject with {body['type']} {body['expr']}"
    if kind == "dnat":
        addr = body["addr"] if body["family"] == "ip" else f"[{body['addr']}]"
        port = f":{body['port']}" if "port" in body else ""
        return f"dnat {body['family']} to {addr}{port}"
    if kind == "masquerade":
        return "masquerade"
    if kind == "set":
        inner = " ".join([_left(body["elem"]), *(_expr(s) for s in body.get("stmt", []))])
        return f"{body['op']} {body['set']} {{ {inner} }}"
    if kind == "flow":
        return f"flow {body['op']} {body['flowtable']}"
    if kind == "ct count":
        over = "over " if body.get("inv") else ""
        return f"ct count {over}{body['val']}"
    raise ValueError(f"cannot render statement {kind!r}")


def _match(body: Json) -> str:
    left = body["left"]
    quoted = "meta" in left and left["meta"]["key"] in _QUOTED_META
    right = body["right"]
    if "fib" in left and isinstance(right, bool):
        return f"{_left(left)} {'exists' if right else 'missing'}"
    op = "" if body["op"] in ("==", "in") else f"{body['op']} "
    return f"{_left(left)} {op}{_value(right, quoted)}"


def _left(left: Json) -> str:
    kind, body = next(iter(left.items()))
    if kind == "meta":
        return body["key"] if body["key"] in _META_PLAIN else f"meta {body['key']}"
    if kind == "payload":
        return f"{body['protocol']} {body['field']}"
    if kind == "ct":
        return f"ct {body['dir']} {body['key']}" if "dir" in body else f"ct {body['key']}"
    if kind == "fib":
        return f"fib {' . '.join(body['flags'])} {body['result']}"
    if kind == "&":
        field, mask = body
        return f"{_left(field)} & ({' | '.join(mask)})"
    raise ValueError(f"cannot render expression {kind!r}")


def _value(value: Any, quoted: bool = False) -> str:
    if isinstance(value, bool):
        return "exists" if value else "missing"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if value.startswith("@"):
            return value
        return _quote(value) if quoted else value
    if isinstance(value, list):
        return ",".join(_value(v, quoted) for v in value)
    if "set" in value:
        return "{ " + ", ".join(_value(v, quoted) for v in value["set"]) + " }"
    if "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if "range" in value:
        first, last = value["range"]
        return f"{_value(first, quoted)}-{_value(last, quoted)}"
    raise ValueError(f"cannot render value {value!r}")


def _rate(body: Json) -> str:
    over = "over " if body.get("inv") else ""
    burst = f" burst {body['burst']} packets" if "burst" in body else ""
    return f"{over}{body['rate']}/{body['per']}{burst}"


def _name(name: str) -> str:
    """Object names are nft identifiers (the model only allows letters, digits, _ . -)."""
    return name


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
