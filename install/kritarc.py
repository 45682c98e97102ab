"""Krita's kritarc (a Qt INI file): enable the plug-in under [python], and put the
earlier value back on uninstall, touching no other line of the file."""
from __future__ import annotations

from pathlib import Path

from .manifest import Manifest, make_dirs
from .paths import KRITA_PLUGIN


def _split_lines(text: str):
    return text.splitlines(keepends=True)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _section_span(lines, section: str):
    """(header index, end index) of [section] in lines, or None."""
    header = f"[{section}]"
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if start is None:
            if s == header:
                start = i
        elif s.startswith("[") and s.endswith("]"):
            return start, i
    return (start, len(lines)) if start is not None else None


def _key_of(line: str):
    s = line.strip()
    if not s or s.startswith(("#", ";")) or "=" not in s:
        return None
    return s.split("=", 1)[0].strip()


def ini_get(text: str, section: str, key: str):
    lines = _split_lines(text)
    span = _section_span(lines, section)
    if span is None:
        return None
    for line in lines[span[0] + 1:span[1]]:
        if _key_of(line) == key:
            return line.split("=", 1)[1].strip()
    return None


def ini_set(text: str, section: str, key: str, value: str) -> str:
    """Set section/key, touching no other line of the file."""
    nl = _newline(text)
    lines = _split_lines(text)
    span = _section_span(lines, section)
    entry = f"{key}={value}{nl}"
    if span is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        if lines and lines[-1].strip():
            lines.append(nl)  # Krita separates groups by a blank line
        lines += [f"[{section}]{nl}", entry]
        return "".join(lines)
    start, end = span
    for i in range(start + 1, end):
        if _key_of(lines[i]) == key:
            lines[i] = entry
            return "".join(lines)
    # Append after the section's last non-blank line.
    insert = end
    while insert > start + 1 and not lines[insert - 1].strip():
        insert -= 1
    if not lines[insert - 1].endswith(("\n", "\r")):
        lines[insert - 1] += nl
    lines.insert(insert, entry)
    return "".join(lines)


def ini_unset(text: str, section: str, key: str, drop_empty_section: bool) -> str:
    lines = _split_lines(text)
    span = _section_span(lines, section)
    if span is None:
        return text
    start, end = span
    kept = [ln for ln in lines[start + 1:end] if _key_of(ln) != key]
    if drop_empty_section and not any(ln.strip() for ln in kept):
        # Drop the header too, and the blank line we put before it.
        before = lines[:start]
        if before and not before[-1].strip() and end == len(lines):
            before = before[:-1]
        return "".join(before + lines[end:])
    return "".join(lines[:start + 1] + kept + lines[end:])


def read_exact(path: Path) -> str:
    """File text with its line endings untouched (read_text would turn CRLF into LF)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def write_exact(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def enable_krita_plugin(kritarc: Path, manifest: Manifest) -> str | None:
    """Set [python] enable_fbcnn_krita=true; remember the earlier value once. Returns it."""
    key = f"enable_{KRITA_PLUGIN}"
    existed = kritarc.is_file()
    text = read_exact(kritarc) if existed else ""
    previous = ini_get(text, "python", key)
    records = manifest.data["kritarc"]
    if str(kritarc) not in records:
        # Only the first install records: a re-run must not take our own "true" as the
        # user's earlier setting.
        records[str(kritarc)] = {"key": key, "previous": previous, "file_existed": existed,
                                 "final_newline": text.endswith(("\n", "\r")) or not text,
                                 "section_existed": _section_span(_split_lines(text), "python") is not None}
    new = ini_set(text, "python", key, "true")
    if new != text:
        make_dirs(kritarc.parent, manifest)
        write_exact(kritarc, new)
    return previous


def restore_kritarc(kritarc: Path, record: dict) -> str:
    """Put enable_fbcnn_krita back as it was before the first install."""
    if not kritarc.is_file():
        return "already gone"
    text = read_exact(kritarc)
    key = record.get("key", f"enable_{KRITA_PLUGIN}")
    if record.get("previous") is None:
        new = ini_unset(text, "python", key, drop_empty_section=not record.get("section_existed"))
        what = f"removed {key}"
        if record.get("final_newline") is False and new.endswith("\n"):
            # We had to end the last line to append our section; undo that too.
            new = new[:-2] if new.endswith("\r\n") else new[:-1]
    else:
        new = ini_set(text, "python", key, record["previous"])
        what = f"{key} back to {record['previous']}"
    if not record.get("file_existed") and not new.strip():
        kritarc.unlink()
        return what + " (file removed: the installer had created it)"
    if new != text:
        write_exact(kritarc, new)
    return what
