"""Fuzz target: the server's tokens file (anning.server.tokens.Tokens.load).

The file is an operator's, edited by hand: `sha256:<64 hex> role[,role...]` a line, comments
after `#`. A bad file must stop the start with a message naming the file and the line, never
another exception, and never grant what the file does not say. Properties, per input:
- load returns Tokens or raises InvalidInput whose message starts with the file's path (and,
  for a bad line, names a line of the file that is not blank);
- every digest it accepts is written in the file, on a line of its own, with exactly the roles
  it grants (each one of check, write, admin);
- for files made of real tokens' lines (in any case of hex, with comments, blank lines, CRLF,
  spaces and tabs), each token is granted the roles of its last line, and a token not in the
  file is granted nothing.
Run: python fuzz/fuzz_tokens.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    from anning.errors import InvalidInput
    from anning.server.tokens import ROLES, Tokens

WORKDIR = Path(tempfile.mkdtemp(prefix="anning-fuzz-tokens-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
PATH = WORKDIR / "tokens"
LINE = re.compile(r":(\d+): ")
SPACES = (" ", "\t", "  ", " \t")
ENDS = ("\n", "\r\n", "\n\n", "\n# a comment\n", "  # granted by ops\n")


def load(data: bytes) -> Tokens | None:
    PATH.write_bytes(data)
    os.chmod(PATH, 0o600)
    try:
        return Tokens.load(PATH)
    except InvalidInput as exc:
        message = str(exc)
        expect(message.startswith(f"{PATH}"), f"InvalidInput does not name the file: {message}")
        named = LINE.match(message[len(str(PATH)):])
        if named:
            lines = data.decode("utf-8").splitlines()
            n = int(named.group(1))
            expect(1 <= n <= len(lines) and lines[n - 1].split("#", 1)[0].strip(),
                   f"{message}: line {n} is not a written line of the file")
        return None


def structured(fdp: atheris.FuzzedDataProvider) -> None:
    tokens = [fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 12)) or "t"
              for _ in range(fdp.ConsumeIntInRange(1, 4))]
    granted: dict[str, frozenset[str]] = {}
    text = ""
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        token = tokens[fdp.ConsumeIntInRange(0, len(tokens) - 1)]
        roles = [r for r in ROLES if fdp.ConsumeBool()] or ["check"]
        digest = hashlib.sha256(token.encode()).hexdigest()
        if fdp.ConsumeBool():
            digest = digest.upper()
        text += (SPACES[fdp.ConsumeIntInRange(0, 3)] * fdp.ConsumeIntInRange(0, 1)
                 + f"sha256:{digest}" + SPACES[fdp.ConsumeIntInRange(0, 3)] + ",".join(roles)
                 + ENDS[fdp.ConsumeIntInRange(0, len(ENDS) - 1)])
        granted[token] = frozenset(roles)
    loaded = load(text.encode())
    expect(loaded is not None, f"a good file refused: {text!r}")
    assert loaded is not None
    for token in tokens:
        expect(loaded.roles(token) == granted.get(token),
               f"{token!r}: {loaded.roles(token)}, the file says {granted.get(token)}")
    expect(loaded.roles("not-" + tokens[0]) is None, "a token not in the file is granted")


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    if fdp.ConsumeBool():
        structured(fdp)
        return
    data = fdp.ConsumeBytes(fdp.remaining_bytes())
    loaded = load(data)
    if loaded is None:
        return
    text = data.decode("utf-8")
    written: dict[str, set[frozenset[str]]] = {}
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2 and parts[0][:7] == "sha256:":
            written.setdefault(parts[0][7:].lower(), set()).add(frozenset(parts[1].split(",")))
    for digest, roles in loaded._known:
        expect(digest in written, f"digest {digest} granted, not written in the file")
        expect(roles in written[digest] and roles <= set(ROLES) and roles,
               f"digest {digest} granted {roles}, the file says {written[digest]}")


if __name__ == "__main__":
    _harness.run(test_one_input)
