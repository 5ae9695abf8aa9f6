"""docs/register-maps.md says which models each map serves, where they and the end model
sit, and how many requests a read takes: each is what the maps generate."""

from __future__ import annotations

import re
from pathlib import Path

from firmware_bridge.maps import get_map

KIND_WORD = {"sunspec_inverter": "inverter", "sunspec_battery": "battery",
             "sunspec_meter": "meter", "gpu_rack": "GPU rack"}


def _sections(repo: Path) -> dict[str, str]:
    text = (repo / "docs" / "register-maps.md").read_text()
    return {s.split("`")[1]: s for s in text.split("\n### ")[1:]}


def test_models_and_their_addresses_are_the_generated_ones(repo: Path) -> None:
    for name, section in _sections(repo).items():
        regmap = get_map(name)
        heading = section.splitlines()[0]
        models = [int(m) for m in heading.split("models ")[1].split(", ")]
        assert models == list(regmap.models), name
        if name == "gpu_rack":  # its own page has the addresses
            continue
        layout = regmap.layout()
        prose = " ".join(section.split("\n\n")[1].split())
        listed = {int(m): int(a) for a, m in re.findall(r"(\d{5}) \((\d+)\)", prose)}
        listed |= {int(m): int(a) for m, a in re.findall(r"Model (\d+) at (\d{5})", prose)}
        assert {m: a for m, a in layout.models.items() if m != 1} == \
            {m: a for m, a in listed.items() if m != 1}, name
        end = int(re.search(r"end model at (\d{5})", prose)[1])
        assert end == layout.end_address - 2, name  # [0xFFFF, 0] ends the chain


def test_the_requests_of_a_read_are_the_generated_ones(repo: Path) -> None:
    text = " ".join((repo / "docs" / "register-maps.md").read_text().split())
    for name, word in KIND_WORD.items():
        regmap = get_map(name)
        spans = regmap.read_spans(regmap.layout())
        m = re.search(rf"\ban? {word} (?:read is )?(\d+)(?: requests?)?(?: \(([^)]*)\))?", text,
                      re.IGNORECASE)
        assert m is not None, word
        assert int(m[1]) == len(spans), (word, spans)
        if m[2]:
            quoted = re.findall(r"(\d{5})\+(\d+)", m[2])
            assert [(int(a), int(n)) for a, n in quoted] == spans, word
