"""Read a widget's SVG picture back: the marks written after the frame (see dpo_teach.widgets.canvas)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def marks(svg: bytes, tag: str) -> list[dict]:
    """The attributes of every ``tag`` element (``rect``, ``polyline``, ``line``, ``g``) drawn after the frame's
    ``<defs>`` of clip paths, i.e. the marks that move with β, in drawing order."""
    root = ET.fromstring(bytes(svg))
    children = list(root)
    last_defs = max(i for i, child in enumerate(children) if child.tag == f"{SVG}defs")
    return [dict(child.attrib) for child in children[last_defs + 1 :] if child.tag == f"{SVG}{tag}"]


def polyline_points(attrib: dict) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in attrib["points"].split()]
