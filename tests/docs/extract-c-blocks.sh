#!/bin/sh
# SPDX-License-Identifier: MIT
# Splits the ```c blocks of a Markdown file into C files, so the build can
# compile every code block a document shows (see meson.build here for the
# conventions).
#
#   extract-c-blocks.sh --list MARKDOWN     prints the file names, one a line
#   extract-c-blocks.sh MARKDOWN OUTDIR     writes them into OUTDIR
#
# Each block becomes DOC-NN-KIND.c (NN counts the ```c blocks from 01,
# KIND is plugin, program or fragment) with #line directives, so a
# compiler error names the Markdown file and its line. A fragment is
# wrapped: the agenthost header first, unused static functions allowed.
# A block marked <!-- continued --> is compiled after the code of the
# blocks it continues, in one file. Exits 1, naming the line, on a marker
# not followed by a ```c block, an unknown marker, a continued block with
# nothing before it or an unterminated block.
set -eu

list=0
if [ "${1:-}" = "--list" ]; then
  list=1
  shift
fi
if [ "$#" -ne $((2 - list)) ]; then
  echo "usage: $0 --list MARKDOWN | $0 MARKDOWN OUTDIR" >&2
  exit 2
fi
markdown=$1
outdir=${2:-}
doc=$(basename "$markdown" .md)

exec awk -v list="$list" -v outdir="$outdir" -v doc="$doc" -v markdown="$markdown" '
function fail(message) {
  printf "%s:%d: %s\n", markdown, NR, message > "/dev/stderr"
  failed = 1
  exit 1
}

function block_kind(    i) {
  if (marker != "" && marker != "continued")
    return marker
  for (i = 1; i <= n_lines; i++)
    if (lines[i] ~ /AH_PLUGIN_DEFINE[ \t]*\(/)
      return "plugin"
  for (i = 1; i <= n_lines; i++)
    if (lines[i] ~ /^(int[ \t]+)?main[ \t]*\(/)
      return "program"
  return "fragment"
}

function write_block(    kind, name, path, i) {
  kind = block_kind()
  name = sprintf("%s-%02d-%s.c", doc, n_blocks, kind)
  if (list) {
    print name
    return
  }
  path = outdir "/" name
  printf "/* Generated from %s by extract-c-blocks.sh: do not edit. */\n", markdown > path
  if (kind == "fragment") {
    print "#include <agenthost/agenthost.h>" > path
    print "#include <string.h>" > path
    # A fragment shows a piece of a plugin: the rest that would call its
    # functions is not there.
    print "#pragma GCC diagnostic ignored \"-Wunused-function\"" > path
    print "#pragma GCC diagnostic ignored \"-Wunused-const-variable\"" > path
  }
  for (i = 1; i <= n_lines; i++)
    print lines[i] > path
  close(path)
}

BEGIN { in_c = 0; in_other = 0; marker = ""; marker_line = 0; comment_line = -1; n_blocks = 0 }

in_c && /^```[ \t]*$/ { write_block(); in_c = 0; marker = ""; next }
in_c { lines[++n_lines] = $0; next }
# A closing fence has no info string (CommonMark).
in_other && /^```[ \t]*$/ { in_other = 0; next }
in_other { next }

/^```c[ \t]*$/ {
  if (comment_line == NR - 1)
    fail("unknown marker right before a ```c block (expected <!-- fragment -->, "  \
         "<!-- program -->, <!-- plugin --> or <!-- continued -->)")
  in_c = 1
  n_blocks++
  if (marker == "continued") {
    if (n_blocks == 1)
      fail("a continued block needs a ```c block before it")
  } else {
    n_lines = 0
  }
  lines[++n_lines] = sprintf("#line %d \"%s\"", NR + 1, markdown)
  next
}
/^```/ {
  if (marker != "")
    fail("the marker of line " marker_line " is not followed by a ```c block")
  in_other = 1
  next
}
/^<!-- (fragment|program|plugin|continued) -->[ \t]*$/ {
  if (marker != "")
    fail("two markers in a row (the first at line " marker_line ")")
  marker = $2
  marker_line = NR
  next
}
/^<!-- *(fragment|program|plugin|continued)/ {
  fail("unknown marker: " $0 " (expected <!-- fragment -->, <!-- program -->, <!-- plugin --> or <!-- continued -->)")
}
{
  if (marker != "")
    fail("the marker of line " marker_line " must be right before a ```c block")
  if ($0 ~ /^<!--.*-->[ \t]*$/)
    comment_line = NR
}

END {
  if (failed)
    exit 1
  if (in_c || in_other) {
    printf "%s: a code block is not closed\n", markdown > "/dev/stderr"
    exit 1
  }
}
' "$markdown"
