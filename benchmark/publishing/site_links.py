"""A site that is one self-contained folder: every link and asset resolves inside it.

The generator (``benchmark.publishing.site``) links each entry to its result JSON, logs, model files and
RobustBench entry where they lie, relative to the page (``../../runs/...``): a site copied or
deployed on its own would then hold broken links, and a link may point anywhere a manifest says.
``bundle(site_dir, results_root)`` rewrites the built pages so that:

- a link to a regular file inside ``results_root`` (the results tree the site was built from) of
  at most ``MAX_COPY_BYTES`` is copied to ``site_dir/files/<its path under results_root>`` and the
  link points at the copy;
- any other link leaving the site (a file outside the results tree such as a log under
  ``work/``, a missing file, a link, a model file larger than the cap) loses its ``href`` and keeps
  its text: the page still names the file and its sha256, it no longer points outside;
- nothing outside ``results_root`` is ever read or copied.

``link_problems(site_dir)`` is the checker: every ``href``/``src`` of every page that is not an
external URL or an anchor must name a regular file inside the site. Dependency-free.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterable
from html import unescape
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

MAX_COPY_BYTES = 4 * 2 ** 20
FILES = "files"
_ATTR = re.compile(r'\s(href|src)="([^"]*)"')
_EXTERNAL = ("http://", "https://", "mailto:", "data:", "#", "javascript:")


def _links(html: str):
    for m in _ATTR.finditer(html):
        yield m, unescape(m.group(2))


def _target(page: Path, link: str) -> Path | None:
    """The file a relative link names (None for an external one or an anchor)."""
    if not link or link.startswith(_EXTERNAL) or urlsplit(link).scheme:
        return None
    path = unquote(urlsplit(link).path)
    if not path:
        return None
    return Path(os.path.normpath(page.parent / path))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _regular(path: Path, max_bytes: int | None = None) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (max_bytes is None or st.st_size <= max_bytes)


def _real_inside(path: Path, folder: Path) -> bool:
    """``path`` lies in ``folder`` with no link on the way (each component checked)."""
    if not _inside(path, folder):
        return False
    cur = folder
    for part in path.relative_to(folder).parts:
        cur = cur / part
        if os.path.islink(cur):
            return False
    return True


def bundle(site_dir: str | Path, results_root: str | Path, pending: Iterable[str] = ()) -> dict[str, int]:
    """Makes ``site_dir`` self-contained (see the module docstring); returns the counts of links
    kept, copied and unlinked. ``pending``: paths relative to ``site_dir`` that the caller writes
    after this build (the archived publications' own sites under ``archived/``): links to them
    are kept; the caller checks the finished site with ``link_problems``."""
    site = Path(os.path.abspath(site_dir))
    root = Path(os.path.abspath(results_root))
    later = {site / p for p in pending}
    counts = {"inside": 0, "copied": 0, "unlinked": 0}
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        out, last = [], 0
        for m, link in _links(html):
            target = _target(page, link)
            if target is None:
                continue
            if (_real_inside(target, site) and _regular(target)) or Path(os.path.abspath(target)) in later:
                counts["inside"] += 1
                continue
            new = None
            if _real_inside(target, root) and not _inside(target, site) and _regular(target, MAX_COPY_BYTES):
                copy = site / FILES / target.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                if not copy.exists():
                    shutil.copyfile(target, copy)
                rel = os.path.relpath(copy, page.parent)
                new = f' {m.group(1)}="' + "/".join(quote(p) for p in rel.split(os.sep)) + '"'
                counts["copied"] += 1
            else:
                new = ' data-unlinked="' + m.group(2) + '"' if m.group(1) == "href" else ' src=""'
                counts["unlinked"] += 1
            out.append(html[last:m.start()] + new)
            last = m.end()
        if out:
            page.write_text("".join(out) + html[last:], encoding="utf-8")
    return counts


def link_problems(site_dir: str | Path) -> list[str]:
    """Every link or asset of the site's pages that does not name a regular file inside it."""
    site = Path(os.path.abspath(site_dir))
    problems = []
    for page in sorted(site.rglob("*.html")):
        for _, link in _links(page.read_text(encoding="utf-8")):
            target = _target(page, link)
            if target is None:
                continue
            if not _real_inside(target, site):
                problems.append(f"{page.relative_to(site)}: {link} leaves the site")
            elif not _regular(target):
                problems.append(f"{page.relative_to(site)}: {link} names no file of the site")
    return problems


__all__ = ["MAX_COPY_BYTES", "bundle", "link_problems"]
