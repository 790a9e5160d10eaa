#!/usr/bin/env python3
"""The man page appliance(8) and the bash completion, generated from the CLI's argparse
definitions (``appliance.cli.build_parser()``), so both follow the commands as they are.

    python3 packaging/gen_docs.py man OUT.8
    python3 packaging/gen_docs.py bash-completion OUT

Run with the checkout on ``sys.path`` (the package build does). Commands whose name starts
with ``_`` are internal and left out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance import __version__
from appliance.cli import build_parser

# The daemon's files, for FILES in the man page.
FILES = (
    ("/etc/appliance/profile.toml", "the profile the daemon enforces (a conffile)"),
    ("/var/lib/appliance/", "state: the last good policy, last-good.nft, hub bundles"),
    ("/run/appliance/control.sock", "the daemon's control socket (status, sets, confirm)"),
    ("/usr/share/appliance/failsafe.nft", "the failsafe table, loaded at boot without a state"),
    ("/usr/lib/systemd/system/appliance.service", "the daemon's unit"),
    ("/usr/lib/systemd/system/appliance-restore.service", "loads the last good ruleset at boot"),
)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of the public subcommands of ``parser``, in definition order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {n: p for n, p in action.choices.items() if not n.startswith("_")}
    return {}


def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string the parser takes (long and short)."""
    return [s for a in parser._actions for s in a.option_strings]


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command path, parser, help) for every public subcommand, depth first."""
    docs = helps(parser)
    for name, sub in subcommands(parser).items():
        yield (*path, name), sub, docs.get(name, "")
        yield from walk(sub, (*path, name))


# ---- man page ---------------------------------------------------------------------------


def roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens in words, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def option_lines(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> list[str]:
    """.TP paragraphs for the parser's arguments, leaving out the options in ``skip``."""
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if skip.intersection(action.option_strings):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            metavar = "" if action.nargs == 0 else " " + name
            head = ", ".join(f"\\fB{roff(s)}\\fR" for s in action.option_strings)
            head += f"\\fI{roff(metavar)}\\fR" if metavar.strip() else ""
        else:
            choices = "|".join(str(c) for c in action.choices or ())
            head = f"\\fI{roff(choices or str(action.metavar or action.dest))}\\fR"
        text = action.help or ""
        if action.choices and action.option_strings:
            text = (text + " " if text else "") + "One of: " + ", ".join(map(str, action.choices))
        lines += [".TP", head, roff(text) if text else ""]
    return [line for line in lines if line != ""] if lines else []


def man_page(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or build_parser()
    common = frozenset(options(parser))
    out = [
        f'.TH APPLIANCE 8 "" "appliance {__version__}" "System Administration"',
        ".SH NAME",
        "appliance \\- " + roff(parser.description or "security appliance"),
        ".SH SYNOPSIS",
        ".B appliance",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        roff(
            "appliance compiles a declarative TOML profile into one nftables table "
            "(inet appliance) and applies it atomically; `appliance run` is the daemon that "
            "keeps it enforced, repairs drift, serves status over a control socket and "
            "Prometheus metrics. Invalid input is reported on one line naming the key path "
            "or FILE:LINE, with exit status 2, and nothing is changed."
        ),
        ".SH OPTIONS",
        roff("These options are taken before the command's name or after it."),
        *option_lines(parser),
        ".SH COMMANDS",
    ]
    for path, sub, text in walk(parser):
        out += [".SS " + roff(" ".join(path)), roff(text) if text else "", ".PP"]
        out += [".B Usage:", roff(usage(sub))]
        lines = option_lines(sub, skip=common)
        if lines:
            out += [".RS", *lines, ".RE"]
    out += [
        ".SH EXIT STATUS",
        ".TP\n0\nsuccess",
        ".TP\n1\nthe kernel or the daemon refused, or a run-time failure",
        ".TP\n2\ninvalid input (profile, arguments): one line, nothing changed",
        ".TP\n3\n\\fBplan\\fR: changes are pending",
        ".SH FILES",
    ]
    for file, purpose in FILES:
        out += [".TP", f"\\fI{roff(file)}\\fR", roff(purpose)]
    out += [
        ".SH SEE ALSO",
        "\\fBnft\\fR(8), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), /usr/share/doc/appliance/",
    ]
    return "\n".join(line for line in out if line != "") + "\n"


# ---- bash completion ----------------------------------------------------------------------


def bash_completion(parser: argparse.ArgumentParser | None = None) -> str:
    """A completion function that needs nothing but bash (no bash-completion helpers):
    commands, their subcommands, their options and fixed choices."""
    parser = parser or build_parser()
    cases: list[str] = []
    top = " ".join([*subcommands(parser), *options(parser)])
    cases.append(f'        "") words="{top}" ;;')
    for path, sub, _ in walk(parser):
        choices = [
            str(c)
            for a in sub._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
            for c in a.choices or ()
        ]
        children = list(subcommands(sub))
        words = " ".join([*children, *choices, *options(sub)])
        cases.append(f'        "{" ".join(path)}") words="{words}" ;;')
    commands = "|".join(" ".join(path) for path, _, _ in walk(parser))
    return (
        "# bash completion for appliance(8), generated from its argparse definitions\n"
        "_appliance() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" path="" next word words i\n'
        f'    local known="|{commands}|"\n'
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        '        word="${COMP_WORDS[i]}"\n'
        '        case "$word" in -*) continue ;; esac\n'
        '        next="${path:+$path }$word"\n'
        '        if [[ "$known" == *"|$next|"* ]]; then path="$next"; fi\n'
        "    done\n"
        '    case "$path" in\n' + "\n".join(cases) + "\n"
        '        *) words="" ;;\n'
        "    esac\n"
        '    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")\n'
        '    if [ "${#COMPREPLY[@]}" -eq 0 ]; then\n'
        '        mapfile -t COMPREPLY < <(compgen -f -- "$cur")\n'
        "    fi\n"
        "}\n"
        "complete -F _appliance appliance\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("man", "bash-completion"):
        print("usage: gen_docs.py man|bash-completion OUT", file=sys.stderr)
        return 2
    text = man_page() if argv[0] == "man" else bash_completion()
    Path(argv[1]).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
