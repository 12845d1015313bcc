"""Is a result's number made by today's code? The one place that answers it.

A result records ``provenance.stage_code``, the digest of the code of its row's scope (the
shared stage code, its method's own file, methods/s2ap.py for an S2AP row: benchmark/core/provenance.py
``stage_code_files``), and ``provenance.code_scope`` saying which scope that was. The current
digest of the same scope, compared with the recorded one, gives the leaderboard's X flag, the
site's "stale" line, publishing's refusal and the CI test that fails when main shows a stale
publication (tests/test_published_current.py).

A published preset that is not republished after its code changed (a study hours long) is
*archived* instead: ``python -m benchmark publish --archive NAME`` writes ``archived.json`` into
its folder (the revision it was made at, and why), and the site shows it under "Archived" with a
banner on every page and table, never as current. An archived publication is exempt from the
staleness test: it says itself that it is not current. Torch-free.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.core.io import atomic_write_json, atomic_write_text
from benchmark.core.provenance import S2AP_ACTIVE, stage_code_digest
from benchmark.results import md_escape

ARCHIVE_FILE = "archived.json"
ARCHIVE_FORMAT = "apbench-archived-publication"
# a result made before code_scope existed: its scope follows from its cell (no outside method file)
_SUBMISSION_SCOPE = {"method": None, "s2ap": None, "method_files": []}


def code_scope_of(res: dict[str, Any]) -> dict[str, Any]:
    """The scope a result's stage code covered (recorded, or derived from an older result's cell)."""
    prov = res.get("provenance") or {}
    scope = prov.get("code_scope")
    if isinstance(scope, dict):
        return {"method": scope.get("method"), "s2ap": scope.get("s2ap"),
                "method_files": list(scope.get("method_files") or [])}
    if res.get("submission"):
        return dict(_SUBMISSION_SCOPE)
    cell = res.get("cell") or {}
    return {"method": cell.get("method"), "s2ap": cell.get("s2ap"), "method_files": []}


class CurrentCode:
    """The current stage code digest per scope, each computed once (a leaderboard asks per row)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._memo: dict[tuple, str] = {}

    def of_scope(self, scope: dict[str, Any]) -> str:

        files = tuple(f for f in scope.get("method_files") or [] if Path(f).is_file())
        s2ap = scope.get("s2ap")
        key = (scope.get("method"), s2ap in S2AP_ACTIVE, files)
        if key not in self._memo:
            self._memo[key] = stage_code_digest(self.root, method=scope.get("method"), s2ap=s2ap,
                                                method_files=files)
        return self._memo[key]

    def of_result(self, res: dict[str, Any]) -> str:
        return self.of_scope(code_scope_of(res))

    def is_stale(self, res: dict[str, Any]) -> bool:
        return (res.get("provenance") or {}).get("stage_code") != self.of_result(res)


def stale_stages(res: dict[str, Any], current: CurrentCode, revision: str | None
                 ) -> list[tuple[str, str]]:
    """(stage, why) for every stage that made the result's model and does not match today's code
    at ``revision`` (HEAD): another revision, a dirty tree or other stage code. A result made
    before stages were recorded gives one ("stages", why)."""
    stages = (res.get("provenance") or {}).get("stages")
    if not isinstance(stages, dict) or not stages:
        return [("stages", "records no per-stage provenance (made by an older version of the suite)")]
    out = []
    for stage, rec in stages.items():
        if not isinstance(rec, dict):
            out.append((stage, "has no provenance record"))
            continue
        if revision and rec.get("revision") != revision:
            out.append((stage, f"ran at revision {str(rec.get('revision'))[:12]}, HEAD is {revision[:12]}"))
        if rec.get("dirty") is not False:
            out.append((stage, "ran from a tree with uncommitted or untracked code"
                        if rec.get("dirty") else "ran outside a git checkout"))
        scope = rec.get("scope") or {"method": None, "s2ap": None, "method_files": []}
        now = current.of_scope(scope)
        if rec.get("stage_code") != now:
            out.append((stage, f"ran stage code {rec.get('stage_code')}, the current code is {now}"))
    return out


# ---------------------------------------------------------------- published folders
def result_files(pub_dir: Path) -> list[Path]:
    return sorted(p for sub in ("runs", "submissions") if (pub_dir / sub).is_dir()
                  for p in (pub_dir / sub).rglob("*.json"))


def archive_record(pub_dir: str | Path) -> dict[str, Any] | None:
    """The archive marker of a published preset folder, None when it is current."""
    path = Path(pub_dir) / ARCHIVE_FILE
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("format") != ARCHIVE_FORMAT:
        raise ValueError(f"{path} is not an archive marker (format {rec.get('format')!r})")
    return rec


def stale_results(pub_dir: str | Path, root: str | Path | None = None) -> list[tuple[str, str, str]]:
    """(file, recorded digest, current digest) of every published result made by other code than
    today's for its row."""
    pub_dir = Path(pub_dir)
    current = CurrentCode(root)
    out = []
    for path in result_files(pub_dir):
        res = json.loads(path.read_text())
        recorded = (res.get("provenance") or {}).get("stage_code")
        now = current.of_result(res)
        if recorded != now:
            out.append((path.relative_to(pub_dir).as_posix(), str(recorded), now))
    return out


def archive(pub_dir: str | Path, *, reason: str, root: str | Path | None = None) -> dict[str, Any]:
    """Marks a published preset as archived: made at its recorded revision, not republished after
    its code changed. Writes ``archived.json`` (atomically) and returns it."""

    pub_dir = Path(pub_dir)
    published = pub_dir / "published.json"
    if not published.is_file():
        raise FileNotFoundError(f"{pub_dir} is not a published preset (no published.json)")
    record = json.loads(published.read_text())
    stale = stale_results(pub_dir, root)
    rec = {"format": ARCHIVE_FORMAT, "version": 1, "preset": record.get("preset") or pub_dir.name,
           "revision": record.get("revision"), "published_utc": record.get("published_utc"),
           "archived_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "reason": reason, "stale_results": len(stale)}
    # the publication's own tables say so too (published.json keeps their digests as made)
    rec["bannered"] = stamp_tables(pub_dir, rec)
    atomic_write_json(pub_dir / ARCHIVE_FILE, rec)
    return rec


_BANNER_PREFIX = "> **Archived:** "


def stamp_tables(pub_dir: Path, rec: dict[str, Any] | None) -> list[str]:
    """Puts the archive banner (``rec``; None: none) at the top of each markdown table of the
    publication, replacing the one an earlier archiving wrote; returns their names."""
    names = []
    for md in sorted(Path(pub_dir).glob("*.md")):
        text = md.read_text(encoding="utf-8")
        if text.startswith(_BANNER_PREFIX):
            text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        if rec is not None:
            body = banner_text(rec).removeprefix("Archived: ")
            text = f"{_BANNER_PREFIX}{md_escape.cell(body)}\n\n{text}"
        atomic_write_text(md, text)
        names.append(md.name)
    return names


def banner_text(rec: dict[str, Any]) -> str:
    """The one-line banner of an archived publication (site pages, markdown tables)."""
    rev = str(rec.get("revision") or "unknown")[:12]
    return (f"Archived: preset {rec.get('preset')} was made at revision {rev} "
            f"(published {rec.get('published_utc') or 'at an unknown time'}) by code that has since "
            f"changed; it is kept for reference, not current. {rec.get('reason') or ''}").strip()


def current_publications(base: str | Path) -> list[str]:
    """Published presets (folders with published.json) that are not archived."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if (p / "published.json").is_file() and archive_record(p) is None)


def archived_publications(base: str | Path) -> list[str]:
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if (p / "published.json").is_file() and archive_record(p) is not None)


__all__ = ["ARCHIVE_FILE", "stamp_tables", "CurrentCode", "code_scope_of", "stale_stages", "stale_results",
           "archive", "archive_record", "banner_text", "current_publications",
           "archived_publications", "result_files"]
