"""A small Maven dependency resolver (no Maven, no JVM): the runtime closure of some artifacts,
downloaded from Maven Central (``STREAMOTION_MAVEN_REPO`` for a mirror).

It follows Maven 3's rules for what it meets in the artifacts it is used for (the Kafka broker):
parent POMs (properties, dependencies and dependencyManagement inherited), ``${...}``
properties, BOMs imported in dependencyManagement, scopes (compile and runtime kept; test,
provided, system and optional dependencies of dependencies dropped), exclusions, and
"nearest wins, then first declared" for conflicting versions. POMs are cached under
``~/.cache/streamotion/maven``; version ranges and profiles are not supported (an error says so).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamotion.dev.fetch import download, read_url

CENTRAL = "https://repo1.maven.org/maven2"
KEPT_SCOPES = ("compile", "runtime")


def repo_url() -> str:
    return os.environ.get("STREAMOTION_MAVEN_REPO", CENTRAL).rstrip("/")


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion")) / "maven"


@dataclass(frozen=True)
class Coord:
    group: str
    artifact: str
    version: str

    def path(self, ext: str) -> str:
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.artifact}-{self.version}.{ext}"


@dataclass
class Dep:
    group: str
    artifact: str
    version: str | None
    scope: str | None
    optional: bool
    type: str
    classifier: str | None
    exclusions: frozenset[tuple[str, str]]

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.artifact)


@dataclass
class Model:
    coord: Coord
    packaging: str
    props: dict[str, str]
    deps: list[Dep]
    managed: dict[tuple[str, str], Dep] = field(default_factory=dict)


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    for c in el:
        if _strip(c.tag) == name:
            return c
    return None


def _text(el: ET.Element | None, name: str) -> str | None:
    c = _child(el, name)
    return c.text.strip() if c is not None and c.text else None


def _children(el: ET.Element | None, name: str) -> list[ET.Element]:
    return [c for c in el if _strip(c.tag) == name] if el is not None else []


_PROP = re.compile(r"\$\{([^}]+)\}")


def _interp(value: str | None, props: dict[str, str]) -> str | None:
    if value is None:
        return None
    for _ in range(10):
        new = _PROP.sub(lambda m: props.get(m.group(1), m.group(0)), value)
        if new == value:
            break
        value = new
    return value


class Resolver:
    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        self._models: dict[Coord, Model] = {}

    def _pom(self, c: Coord) -> ET.Element:
        path = cache_dir() / c.path("pom")
        if not path.exists():
            data = read_url(f"{repo_url()}/{c.path('pom')}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".part{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return ET.fromstring(path.read_bytes())

    def _deps(self, parent_el: ET.Element | None, props: dict[str, str]) -> list[Dep]:
        out = []
        for d in _children(_child(parent_el, "dependencies"), "dependency"):
            excl = frozenset(
                (_interp(_text(e, "groupId"), props) or "*", _interp(_text(e, "artifactId"), props) or "*")
                for e in _children(_child(d, "exclusions"), "exclusion")
            )
            out.append(
                Dep(
                    group=_interp(_text(d, "groupId"), props) or "",
                    artifact=_interp(_text(d, "artifactId"), props) or "",
                    version=_interp(_text(d, "version"), props),
                    scope=_interp(_text(d, "scope"), props),
                    optional=(_interp(_text(d, "optional"), props) or "false").lower() == "true",
                    type=_interp(_text(d, "type"), props) or "jar",
                    classifier=_interp(_text(d, "classifier"), props),
                    exclusions=excl,
                )
            )
        return out

    def model(self, c: Coord) -> Model:
        """The effective model of a POM: its parents', then its own properties, dependencies and management."""
        if c in self._models:
            return self._models[c]
        root = self._pom(c)
        parent_el = _child(root, "parent")
        parent: Model | None = None
        if parent_el is not None:
            parent = self.model(
                Coord(
                    _text(parent_el, "groupId") or "",
                    _text(parent_el, "artifactId") or "",
                    _text(parent_el, "version") or "",
                )
            )
        props: dict[str, str] = dict(parent.props) if parent else {}
        for p in _child(root, "properties") or []:
            props[_strip(p.tag)] = (p.text or "").strip()
        builtin = {
            "project.groupId": c.group,
            "project.artifactId": c.artifact,
            "project.version": c.version,
            "pom.groupId": c.group,
            "pom.artifactId": c.artifact,
            "pom.version": c.version,
            "version": c.version,
            "groupId": c.group,
            "artifactId": c.artifact,
        }
        if parent:
            builtin |= {
                "project.parent.version": parent.coord.version,
                "parent.version": parent.coord.version,
                "project.parent.groupId": parent.coord.group,
                "parent.groupId": parent.coord.group,
            }
        props |= builtin
        managed: dict[tuple[str, str], Dep] = dict(parent.managed) if parent else {}
        own_managed: dict[tuple[str, str], Dep] = {}
        for d in self._deps(_child(root, "dependencyManagement"), props):
            if d.scope == "import" and d.type == "pom":
                if d.version is None:
                    raise RuntimeError(f"{c}: imported BOM {d.group}:{d.artifact} has no version")
                bom = self.model(Coord(d.group, d.artifact, self._version(d.version, c)))
                for k, v in bom.managed.items():
                    own_managed.setdefault(k, v)
            else:
                own_managed[d.key] = d  # explicit entries win over imported ones
        managed |= own_managed
        deps = list(parent.deps) if parent else []
        own_keys = set()
        own = self._deps(root, props)
        for d in own:
            own_keys.add(d.key)
        deps = [d for d in deps if d.key not in own_keys] + own
        packaging = _text(root, "packaging") or "jar"
        model = Model(coord=c, packaging=packaging, props=props, deps=deps, managed=managed)
        self._models[c] = model
        return model

    @staticmethod
    def _version(version: str, where: Coord) -> str:
        if version.startswith("[") and version.endswith("]") and "," not in version:
            return version[1:-1]
        if version[:1] in "[(" or "${" in version:
            raise RuntimeError(f"{where}: version {version!r} is not supported by this resolver")
        return version

    def resolve(self, roots: list[Coord]) -> list[Coord]:
        """The runtime closure of ``roots`` (jar artifacts), nearest-wins, in breadth-first order."""
        chosen: dict[tuple[str, str], Coord] = {}
        order: list[Coord] = []
        queue: deque[tuple[Coord, frozenset[tuple[str, str]]]] = deque()
        for r in roots:
            if (r.group, r.artifact) not in chosen:
                chosen[(r.group, r.artifact)] = r
                order.append(r)
                queue.append((r, frozenset()))
        while queue:
            coord, exclusions = queue.popleft()
            m = self.model(coord)
            for d in m.deps:
                managed = m.managed.get(d.key)
                scope = d.scope or (managed.scope if managed else None) or "compile"
                if scope not in KEPT_SCOPES or d.optional or d.type not in ("jar", "bundle"):
                    continue
                if d.classifier:
                    continue
                if (
                    d.key in exclusions
                    or (d.group, "*") in exclusions
                    or ("*", "*") in exclusions
                    or d.key in chosen
                ):
                    continue
                version = d.version or (managed.version if managed else None)
                if not version:
                    raise RuntimeError(f"{coord}: no version for dependency {d.group}:{d.artifact}")
                dc = Coord(d.group, d.artifact, self._version(version, coord))
                chosen[d.key] = dc
                order.append(dc)
                queue.append((dc, exclusions | d.exclusions))
        return [c for c in order if self.model(c).packaging not in ("pom",)]

    def fetch_jars(self, coords: list[Coord], out: Path) -> int:
        """Download each artifact's jar into ``out`` (one line per jar); returns the bytes fetched."""
        out.mkdir(parents=True, exist_ok=True)
        total = 0
        for c in coords:
            dest = out / f"{c.artifact}-{c.version}.jar"
            if not dest.exists():
                total += download(f"{repo_url()}/{c.path('jar')}", dest, log=self.log)
        return total
