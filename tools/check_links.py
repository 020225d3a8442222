#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks that every relative Markdown link in the repository's documents resolves.

    tools/check_links.py [file.md ...]   # default: README.md and every *.md under docs/,
                                         # benchmarks/, models/ and tools/

A link [text](target) must name a file or folder that exists, relative to the linking file, and
must not leave the repository. A #fragment on a Markdown target must match one of its headings
(GitHub's slugs). Links with a scheme (https:, mailto:) are not fetched. Exits 1 and lists
every broken link, so a moved results file or a renamed section shows up before a reader finds it.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path):
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
                yield number, match.group(1)


def broken(path):
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        name, _, fragment = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if ROOT != dest and ROOT not in dest.parents:
            yield f"{where} (outside the repository)"
        elif not dest.exists():
            yield f"{where} (no such file)"
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            yield f"{where} (no heading #{fragment})"


def main(argv):
    if argv:
        files = [Path(a).resolve() for a in argv]
    else:
        files = [ROOT / "README.md"]
        for folder in ("docs", "benchmarks", "models", "tools"):
            files += sorted((ROOT / folder).rglob("*.md"))
    problems = [p for f in files if f.exists() for p in broken(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} files, {len(problems)} broken links", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
