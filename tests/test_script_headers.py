"""Every Lua script's header comment states its KEYS, its ARGV and what it returns, and names
each KEYS[n] / ARGV[n] its code reads (and no KEYS[n] it does not)."""

from __future__ import annotations

import re

import pytest

from broker.store.scripts import SCRIPT_DIR, script_names


def header_and_body(name: str) -> tuple[str, str]:
    lines = (SCRIPT_DIR / f"{name}.lua").read_text().splitlines()
    count = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "\n".join(lines[:count]), "\n".join(lines[count:])


@pytest.mark.parametrize("name", script_names())
def test_the_header_states_keys_argv_and_returns(name: str) -> None:
    header, _ = header_and_body(name)
    assert header.startswith(f"-- {name}: ")
    for section in ("KEYS", "ARGV", "Returns"):
        assert re.search(rf"^-- {section}\b", header, re.M), f"{name}.lua: no {section} in its header"


@pytest.mark.parametrize("name", script_names())
def test_the_header_names_what_the_code_reads(name: str) -> None:
    header, body = header_and_body(name)
    for table in ("KEYS", "ARGV"):
        used = {int(n) for n in re.findall(rf"\b{table}\[(\d+)\]", body)}
        listed = {int(n) for n in re.findall(rf"^-- {table}\[(\d+)\]", header, re.M)}
        # "ARGV[12..] triples", "ARGV[2*i], ARGV[2*i+1]": every index from the first on
        tails = [int(n) for n in re.findall(rf"{table}\[(\d+)(?:\.\.|\*)", header)]
        rest = min(tails, default=None)
        assert {n for n in used - listed if rest is None or n < rest} == set(), f"{name}.lua: undocumented {table}"
        if table == "KEYS":
            assert listed - used == set(), f"{name}.lua: documents KEYS it does not read"
