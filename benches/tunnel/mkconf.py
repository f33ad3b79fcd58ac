#!/usr/bin/env python3
"""Derive a dmvpnd configuration from a conf/ example by changing single keys in place.

    mkconf.py SRC DST section.key=VALUE ...

VALUE is a TOML value as written in the file ("eth0" with its quotes, 100 without). The first
table of an array of tables counts as the section ("nhrp.nhs.nbma" edits the first
[[nhrp.nhs]]). An existing key line is rewritten (its trailing comment kept); a missing key is
added at the end of its section, a missing section at the end of the file. Everything else,
comments included, stays as in the example. The result is parsed back and checked.
"""

import re
import sys
import tomllib

HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")
KEY = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(\"[^\"]*\"|[^#]*?)(\s*#.*)?$")


def edit(lines, section, key, value):
    current, seen, start, end = "", set(), None, None
    for i, line in enumerate(lines):
        m = HEADER.match(line)
        if m:
            if start is not None and end is None:
                end = i
            current = m.group(1)
            if current == section and current not in seen:
                start = i + 1
            seen.add(current)
            continue
        if start is not None and end is None and current == section:
            k = KEY.match(line)
            if k and k.group(2) == key:
                comment = k.group(5) or ""
                lines[i] = f"{k.group(1)}{key}{k.group(3)}{value}{comment}"
                return
    if section == "":
        lines.insert(0, f"{key} = {value}")
        return
    if start is None:
        lines.extend(["", f"[{section}]", f"{key} = {value}"])
        return
    if end is None:
        end = len(lines)
    # after the last non-blank line of the section
    j = end
    while j > start and (not lines[j - 1].strip() or lines[j - 1].lstrip().startswith("#")):
        j -= 1
    lines.insert(j, f"{key} = {value}")


def lookup(doc, dotted):
    cur = doc
    for part in dotted.split("."):
        if isinstance(cur, list):
            cur = cur[0]
        cur = cur[part]
    return cur


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src, dst, edits = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(src, encoding="utf-8") as f:
        lines = f.read().splitlines()
    wanted = []
    for e in edits:
        path, _, value = e.partition("=")
        section, _, key = path.rpartition(".")
        edit(lines, section, key, value)
        wanted.append((path, tomllib.loads(f"v = {value}")["v"]))
    text = "\n".join(lines) + "\n"
    doc = tomllib.loads(text)
    for path, value in wanted:
        got = lookup(doc, path)
        if got != value:
            sys.exit(f"mkconf: {path} is {got!r} after editing, wanted {value!r}")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(f"# derived from {src} by benches/tunnel/mkconf.py\n{text}")


if __name__ == "__main__":
    main()
