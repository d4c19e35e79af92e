#!/usr/bin/env python3
"""Puts a generated section into docs/benchmarks.md.

    bench/put-section.py NAME SECTION_FILE

The section file starts with `<!-- NAME begin ...` and ends with `<!-- NAME end -->`; the part
of docs/benchmarks.md between those markers is replaced by it, or it is appended if the page
has none yet. bench/compare.sh and bench/compare-cluster.sh write their sections this way.
"""
import re
import sys

name, section_file = sys.argv[1], sys.argv[2]
section = open(section_file).read()
path = "docs/benchmarks.md"
text = open(path).read()
marker = re.escape(name)
pattern = re.compile(rf"<!-- {marker} begin.*?<!-- {marker} end -->\n?", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
