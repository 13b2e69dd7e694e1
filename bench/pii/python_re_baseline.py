#!/usr/bin/python3
"""The regex stage of the PII/secret detector, in Python's `re`: the baseline for Hyperscan.

    /usr/bin/python3 bench/pii/python_re_baseline.py TEXT_FILE [--rules FILE ...] [--repeat N] [--max-mb M]

Reads the same rule files as aegis::privacy::Detector (data/privacy/pii_rules.toml and
data/privacy/secret_rules.toml by default; gitleaks' TOML shape, parsed with Python 3.11's tomllib),
compiles every rule's `regex` with `re` and counts the matches of each pattern over the file: the
regex stage alone, as Detector::count_candidates does it, with no validation, context or
entropy. This is how a Python detector built on `re` (Presidio's pattern recognizers, one compiled
pattern per recognizer) finds its candidates. One core, as Python does it; the time excludes reading
the file and compiling the patterns (both reported apart).

The text is matched as bytes, as Hyperscan matches it (no UTF-8 mode): \\w, \\d, \\b and case folding
are ASCII. The rules are RE2 syntax; only what `re` reads differently is translated:
  - inline flags after the start, `a(?i)b|c`, become scoped groups, `a(?i:b)|(?i:c)`
    (Python 3.11 takes global flags only at the very start);
  - POSIX classes [[:alpha:]] and friends are spelled out; \\z becomes \\Z; \\Q...\\E is escaped;
    RE2's `(?<name>` becomes `(?P<name>`; `{,n}` (literal in RE2, a repeat in Python) is escaped;
  - \\pL / \\p{L} / \\PL (Unicode classes, meaningless over bytes without UTF-8) become ASCII letters,
    and \\x{HH} becomes \\xHH. Each translation is listed on stderr; a rule that still does not compile
    (e.g. RE2's (?U) ungreedy flag) is named and left out of the timing.

Counting: Python's finditer counts leftmost, non-overlapping matches; Hyperscan reports every end
offset of every match unless a rule asks for one. The match counts of the two engines are printed
for reference, not compared: the work each does to find them is what the timing compares.

The last line is machine-readable for bench/pii/compare_regex.sh:
    engine=python-re bytes=N seconds=S mbps=X matches=M rules=R skipped=K compile_s=C
"""

import argparse
import os
import re
import sys
import time
import tomllib
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_RULES = [os.path.join(ROOT, "data", "privacy", "pii_rules.toml"),
                 os.path.join(ROOT, "data", "privacy", "secret_rules.toml")]

POSIX_CLASSES = {
    "alpha": "A-Za-z", "digit": "0-9", "alnum": "A-Za-z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\r\n\v\f", "blank": r" \t", "xdigit": "0-9A-Fa-f", "word": "A-Za-z0-9_",
    "punct": r"!-/:-@\[-`{-~", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~", "ascii": r"\x00-\x7f",
}
UNICODE_LETTER = "A-Za-z"  # \pL over bytes: the ASCII letters


class Untranslatable(Exception):
    pass


class Translator:
    """RE2 syntax -> Python `re` syntax, by a small recursive-descent pass over the pattern."""

    def __init__(self, pattern):
        self.p = pattern
        self.i = 0
        self.notes = []

    def note(self, what):
        if what not in self.notes:
            self.notes.append(what)

    def translate(self):
        out = self.group_body()
        if self.i != len(self.p):
            raise Untranslatable(f"unbalanced ')' at {self.i}")
        return out

    # A group's content: alternatives separated by '|'. An inline flag group (?flags) applies, in RE2,
    # to the rest of its alternative and to the later alternatives of the same group.
    def group_body(self):
        alternatives, flags = [], ""
        while True:
            pieces, pending = [], None  # pending: pieces after a flag group in this alternative
            while self.i < len(self.p) and self.p[self.i] not in "|)":
                marker = self.inline_flags()
                if marker is not None:
                    if pending is not None:
                        pieces.append(self.wrap(flags, pending))
                    flags = self.merge_flags(flags, marker)
                    pending = []
                    continue
                piece = self.atom()
                (pending if pending is not None else pieces).append(piece)
            if pending is not None:
                pieces.append(self.wrap(flags, pending))
                alternative = "".join(pieces)
            else:
                alternative = self.wrap(flags, pieces) if flags else "".join(pieces)
            alternatives.append(alternative)
            if self.i < len(self.p) and self.p[self.i] == "|":
                self.i += 1
                continue
            return "|".join(alternatives)

    def wrap(self, flags, pieces):
        body = "".join(pieces)
        if not flags or not body:
            return body
        return f"(?{flags}:{body})"

    @staticmethod
    def merge_flags(old, new):
        on, off = set(), set()
        for flags in (old, new):
            sign = True
            for c in flags:
                if c == "-":
                    sign = False
                    continue
                (on if sign else off).add(c)
                (off if sign else on).discard(c)
        text = "".join(sorted(on))
        return text + ("-" + "".join(sorted(off)) if off else "")

    def inline_flags(self):
        m = re.compile(r"\(\?([imsU-]+)\)").match(self.p, self.i)
        if not m:
            return None
        if "U" in m.group(1):
            raise Untranslatable("(?U) ungreedy mode has no Python equivalent")
        self.i = m.end()
        return m.group(1)

    def atom(self):
        c = self.p[self.i]
        if c == "\\":
            return self.escape(in_class=False)
        if c == "[":
            return self.char_class()
        if c == "(":
            return self.group()
        if c == "{" and self.p.startswith("{,", self.i):
            self.i += 1
            self.note("{,n} escaped (a literal in RE2)")
            return r"\{"
        self.i += 1
        return c

    def group(self):
        self.i += 1  # '('
        head = ""
        if self.p.startswith("?P<", self.i):
            end = self.p.index(">", self.i)
            head = "?P<" + self.p[self.i + 3:end] + ">"
            self.i = end + 1
        elif self.p.startswith("?<", self.i) and not self.p.startswith(("?<=", "?<!"), self.i):
            end = self.p.index(">", self.i)
            head = "?P<" + self.p[self.i + 2:end] + ">"
            self.i = end + 1
            self.note("(?<name> -> (?P<name>")
        elif self.p.startswith("?", self.i):
            m = re.compile(r"\?([imsU-]*):").match(self.p, self.i)
            if not m:
                raise Untranslatable(f"unknown group syntax at {self.i}")
            if "U" in m.group(1):
                raise Untranslatable("(?U:...) ungreedy mode has no Python equivalent")
            head = "?" + m.group(1) + ":"
            self.i = m.end()
        body = self.group_body()
        if self.i >= len(self.p) or self.p[self.i] != ")":
            raise Untranslatable("unclosed group")
        self.i += 1
        return "(" + head + body + ")"

    def escape(self, in_class):
        nxt = self.p[self.i + 1] if self.i + 1 < len(self.p) else ""
        if nxt == "":
            raise Untranslatable("trailing backslash")
        if nxt == "z":
            self.i += 2
            self.note(r"\z -> \Z")
            return r"\Z"
        if nxt == "C":
            self.i += 2
            self.note(r"\C -> any byte")
            return r"[\x00-\xff]"
        if nxt == "Q":
            end = self.p.find("\\E", self.i + 2)
            end = len(self.p) if end < 0 else end
            literal = self.p[self.i + 2:end]
            self.i = min(len(self.p), end + 2)
            self.note(r"\Q...\E escaped")
            return re.escape(literal)
        if nxt in "pP":
            negate = nxt == "P"
            if self.p.startswith("{", self.i + 2):
                end = self.p.index("}", self.i)
                name = self.p[self.i + 3:end]
                self.i = end + 1
            else:
                name = self.p[self.i + 2]
                self.i += 3
            self.note(f"\\{nxt}{{{name}}} -> ASCII letters (over bytes)")
            if name.startswith("^"):
                negate, name = not negate, name[1:]
            if name not in ("L", "Latin", "Letter", "Lu", "Ll"):
                raise Untranslatable(f"Unicode class \\p{{{name}}} over bytes")
            cls = {"Lu": "A-Z", "Ll": "a-z"}.get(name, UNICODE_LETTER)
            if in_class:
                if negate:
                    raise Untranslatable("negated Unicode class inside a bracket expression")
                return cls
            return ("[^" if negate else "[") + cls + "]"
        if nxt == "x" and self.p.startswith("{", self.i + 2):
            end = self.p.index("}", self.i)
            value = int(self.p[self.i + 3:end], 16)
            if value > 0xFF:
                raise Untranslatable(f"\\x{{{value:x}}} is not a byte")
            self.i = end + 1
            self.note(r"\x{HH} -> \xHH")
            return "\\x%02x" % value
        self.i += 2
        return "\\" + nxt

    def char_class(self):
        out = "["
        self.i += 1
        if self.p.startswith("^", self.i):
            out += "^"
            self.i += 1
        first = True
        while True:
            if self.i >= len(self.p):
                raise Untranslatable("unclosed bracket expression")
            c = self.p[self.i]
            if c == "]" and not first:
                self.i += 1
                return out + "]"
            first = False
            if c == "[" and self.p.startswith("[:", self.i):
                end = self.p.index(":]", self.i)
                name = self.p[self.i + 2:end]
                negate = name.startswith("^")
                name = name.lstrip("^")
                if name not in POSIX_CLASSES or negate:
                    raise Untranslatable(f"POSIX class [:{name}:]")
                out += POSIX_CLASSES[name]
                self.i = end + 2
                self.note(f"[:{name}:] spelled out")
                continue
            if c == "\\":
                out += self.escape(in_class=True)
                continue
            if c == "[":
                out += "\\["  # a literal '[' in RE2; Python warns about nested sets
                self.i += 1
                continue
            if c in "&~|" and self.p.startswith(c * 2, self.i):  # Python reserves &&, ~~, || in sets
                out += "\\" + c
                self.i += 1
                continue
            out += c
            self.i += 1


def load_rules(paths):
    rules = []
    for path in paths:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for rule in data.get("rules", []):
            if "regex" not in rule:
                continue  # gitleaks' path-only rules
            rules.append((os.path.basename(path), rule.get("id", "?"), rule["regex"]))
    return rules


def compile_rules(rules, verbose):
    compiled, skipped = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for source, rule_id, pattern in rules:
            try:
                t = Translator(pattern)
                python = t.translate()
                compiled.append((rule_id, re.compile(python.encode("utf-8"))))
                if t.notes and verbose:
                    print(f"  {source} {rule_id}: " + "; ".join(t.notes), file=sys.stderr)
            except (Untranslatable, re.error, UnicodeEncodeError, ValueError) as e:
                skipped.append((source, rule_id, str(e)))
    return compiled, skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text_file")
    parser.add_argument("--rules", action="append", help="rule file (repeatable; default the shipped two)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the text; the fastest counts (default 1)")
    parser.add_argument("--max-mb", type=float, default=0, help="match only the first M MB of the file (0 = all)")
    parser.add_argument("--per-rule", action="store_true", help="print each rule's time and match count")
    parser.add_argument("--quiet", action="store_true", help="no translation notes")
    args = parser.parse_args()

    paths = args.rules or [p for p in DEFAULT_RULES if os.path.exists(p)]
    rules = load_rules(paths)
    t0 = time.perf_counter()
    compiled, skipped = compile_rules(rules, not args.quiet)
    compile_s = time.perf_counter() - t0
    for source, rule_id, why in skipped:
        print(f"  not compiled: {source} {rule_id}: {why}", file=sys.stderr)
    if not compiled:
        sys.exit("python_re_baseline: no rule compiled from " + ", ".join(paths))

    with open(args.text_file, "rb") as f:
        data = f.read(int(args.max_mb * 1e6)) if args.max_mb > 0 else f.read()

    best, matches, per_rule = None, 0, {}
    for _ in range(max(1, args.repeat)):
        total, start = 0, time.perf_counter()
        for rule_id, pattern in compiled:
            r0 = time.perf_counter()
            n = 0
            for _m in pattern.finditer(data):
                n += 1
            total += n
            per_rule[rule_id] = (time.perf_counter() - r0, n)
        seconds = time.perf_counter() - start
        if best is None or seconds < best:
            best, matches = seconds, total
    mb = len(data) / 1e6
    if args.per_rule:
        for rule_id, (s, n) in sorted(per_rule.items(), key=lambda kv: -kv[1][0]):
            print(f"  {rule_id:40s} {s:8.2f} s {mb / s if s else 0:10.1f} MB/s {n:10d} matches", file=sys.stderr)
    print(f"python re: {len(compiled)} patterns ({len(skipped)} not compiled) from {', '.join(map(os.path.basename, paths))}; "
          f"{mb:.1f} MB in {best:.2f} s = {mb / best:.1f} MB/s on one core, {matches} matches")
    print(f"engine=python-re bytes={len(data)} seconds={best:.4f} mbps={mb / best:.2f} matches={matches} "
          f"rules={len(compiled)} skipped={len(skipped)} compile_s={compile_s:.3f}")


if __name__ == "__main__":
    main()
