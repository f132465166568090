"""Read the status page the way a browser's parser would, for the rendering tests.

``html.parser`` decodes entities exactly once, as a browser does, so a string that comes back
equal to what the API sent was escaped right: once, neither missed nor doubled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "img", "input", "hr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def walk(self) -> list[Element]:
        found = [self]
        for child in self.children:
            found += child.walk()
        return found

    def find(self, tag: str = "", cls: str = "") -> list[Element]:
        return [
            e for e in self.walk() if (not tag or e.tag == tag) and (not cls or cls in e.classes)
        ]

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack[-1].children:
            self.stack[-1].children.append(Element("#text", {}, data))
        else:
            self.stack[-1].text += data


def parse(html: str) -> Element:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root
