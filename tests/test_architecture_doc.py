"""docs/architecture.md names every module of ``src/``, and nothing that is gone: the page cannot drift."""

from __future__ import annotations

import re

from fmnist_lightning.config.files import project_root

SRC = project_root() / "src"
PAGE = project_root() / "docs" / "architecture.md"


def package_rows(text: str) -> dict[str, dict[str, bool]]:
    """``{"training/": {"resume": True, ...}, "": {"train": True}}``: the names each table row of the page gives
    in backquotes, True where written as a file (``resume.py``); a row of packages by its first cell
    (``training/``), the command modules (``__main__.py`` in the first cell) under ""."""
    rows: dict[str, dict[str, bool]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2:
            continue
        if first := re.fullmatch(r"`([\w/]+/)`", cells[0]):
            named = rows.setdefault(first.group(1), {})
            for name, suffix in re.findall(r"`(\w+)(\.py)?`", cells[1]):
                named[name] = named.get(name, False) or bool(suffix)
        elif module := re.fullmatch(r"`(\w+)\.py`", cells[0]):
            rows.setdefault("", {})[module.group(1)] = True
    return rows


def modules() -> dict[str, set[str]]:
    """The same shape, read from ``src/``: each package (relative, with a slash) and its modules."""
    found: dict[str, set[str]] = {}
    for root in (SRC / "fmnist_lightning", SRC / "hydra_plugins"):
        for path in root.rglob("*.py"):
            if path.name == "__init__.py":
                continue
            package = (
                path.parent.relative_to(SRC / "fmnist_lightning").as_posix() + "/"
                if path.is_relative_to(SRC / "fmnist_lightning")
                else path.parent.relative_to(SRC).as_posix() + "/"
            )
            found.setdefault("" if package == "./" else package, set()).add(path.stem)
    return found


def drift(rows: dict[str, dict[str, bool]], actual: dict[str, set[str]]) -> list[str]:
    problems = [
        f"{package}{name}.py is not on the page"
        for package, names in sorted(actual.items())
        for name in sorted(names - set(rows.get(package, {})))
    ]
    problems += [
        f"{package}{name}.py is on the page but not in src/"
        for package, named in sorted(rows.items())
        for name, as_file in sorted(named.items())
        if as_file and name not in actual.get(package, set())
    ]
    return problems


def test_the_architecture_page_names_every_module_and_nothing_gone() -> None:
    assert not drift(package_rows(PAGE.read_text()), modules())


def test_the_check_catches_a_missing_and_a_removed_module() -> None:
    page = "| `training/` | `resume.py` (resuming), `old_thing.py` (gone) |\n| `train.py` | the run |\n"
    rows = package_rows(page)
    assert rows == {"training/": {"resume": True, "old_thing": True}, "": {"train": True}}
    assert drift(rows, {"training/": {"resume", "requeue"}, "": {"train"}}) == [
        "training/requeue.py is not on the page",
        "training/old_thing.py is on the page but not in src/",
    ]
