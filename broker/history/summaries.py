"""The reference's heuristic summary of messages (no LLM): key points, action items,
mentions and code references, read line by line from the bodies."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

OPEN_BOXES = ("- [ ]", "* [ ]", "+ [ ]")
DONE_BOXES = ("- [x]", "- [X]", "* [x]", "* [X]", "+ [x]", "+ [X]")
ACTION_WORDS = ("TODO", "ACTION", "FIXME", "NEXT", "BLOCKED")
NUMBERED = ("1.", "2.", "3.", "4.", "5.")
CODE_SPAN = re.compile(r"`([^`\n]{1,120})`")
CODE_MARKERS = ("/", ".py", ".ts", ".md")


@dataclass
class Digest:
    """What the heuristic pulls out of a set of messages (ascending by time)."""

    participants: set[str] = field(default_factory=set)
    key_points: list[str] = field(default_factory=list)
    action_items: list[str] = field(default_factory=list)
    mentions: Counter[str] = field(default_factory=Counter)
    code_references: set[str] = field(default_factory=set)
    open_actions: int = 0
    done_actions: int = 0
    total_messages: int = 0

    def add(self, sender: str | None, body: str) -> None:
        self.total_messages += 1
        if sender:
            self.participants.add(sender)
        for raw in body.splitlines():
            line = raw.strip()
            if line:
                self._line(line)

    def _line(self, line: str) -> None:
        for token in line.split():
            if token.startswith("@"):
                name = token[1:].strip(".,:;()[]{}")
                if name:
                    self.mentions[name] += 1
        for span in CODE_SPAN.findall(line):
            if any(marker in span for marker in CODE_MARKERS):
                self.code_references.add(span)
        if line.startswith(("-", "*", "+")) or line[:2] in NUMBERED:
            point = line
            for box in ("- [ ]", "- [x]", "- [X]"):
                if point.startswith(box):
                    point = point[len(box) :]
            point = point.lstrip("-+* ")
            if point:
                self.key_points.append(point)
        if line.startswith(OPEN_BOXES):
            self.open_actions += 1
            self.action_items.append(line)
        elif line.startswith(DONE_BOXES):
            self.done_actions += 1
        elif any(word in line.upper() for word in ACTION_WORDS):
            self.action_items.append(line)

    def top_mentions(self, n: int = 10) -> list[dict[str, Any]]:
        ranked = sorted(self.mentions.items(), key=lambda item: (-item[1], item[0]))
        return [{"name": name, "count": count} for name, count in ranked[:n]]

    def thread_summary(self) -> dict[str, Any]:
        """S of the reference's summarize_thread."""
        summary: dict[str, Any] = {
            "participants": sorted(self.participants),
            "key_points": self.key_points[:10],
            "action_items": self.action_items[:10],
            "total_messages": self.total_messages,
            "open_actions": self.open_actions,
            "done_actions": self.done_actions,
            "mentions": self.top_mentions(),
        }
        if self.code_references:
            summary["code_references"] = sorted(self.code_references)[:10]
        return summary


def digest_of(rows: Iterable[Any]) -> Digest:
    """Rows with ``from`` and ``body_md``, ascending by time."""
    digest = Digest()
    for row in rows:
        digest.add(row["from"], row["body_md"] or "")
    return digest
