"""Keeping every path a data command reads or writes inside the folder it belongs to.

A list names videos relative to a data root; an output option (`--out`, `--flow-dir`) names a
folder the command owns. Neither may reach anywhere else:

- `listed_path`: a name from a list, refused (UserError naming the list, the line and the name)
  when it is absolute, holds '..', or resolves, symlinks followed, outside the root;
- `check_output`: an output folder that is, holds or lies inside a source (the videos, the lists);
- `require_inside`: a path about to be written, resolved, inside its output folder;
- `holds_files`: whether an output folder holds anything a command did not write (hidden names,
  a tool's markers such as rehearse's '.rehearsal', do not count: no command writes a hidden name
  but its own temporaries);
- `file_kind`: what a path is ('file', 'folder', 'FIFO', ...), so that a special file is refused
  before anything opens it (opening a FIFO waits for a writer for ever).

Paths are compared resolved (`os.path.realpath`), so a symlink cannot smuggle a path out.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from orchestrator.errors import UserError


def resolved(path: str | Path) -> Path:
    """`path` absolute, symlinks followed as far as they exist; never raises (a symlink loop or
    an over-long name stays as written, and is then not inside anything it was not already)."""
    try:
        return Path(os.path.realpath(Path(path).expanduser().absolute()))
    except (OSError, RuntimeError, ValueError):
        return Path(os.path.abspath(Path(path).expanduser()))


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether `path`, resolved, is `root` or lies under it (resolved too)."""
    return resolved(path).is_relative_to(resolved(root))


def listed_path(root: Path, names: tuple[str, ...], where: str, *, resolve: bool = True) -> Path:
    """root / names..., the way a list names a video (UCF: ('Class/v.avi',); HMDB: (class, file)).

    Args:
        root: the data root, absolute.
        names: the path's pieces as the list gives them, each relative, '/'-separated.
        where: '<list file> line <n>', for the error.
        resolve: also follow symlinks to check where the path leads (False: only its text, for a
            candidate that is looked up before the one found is checked in full).
    Returns:
        root joined with the names (not resolved: video ids are its relative path).
    Raises:
        UserError (one line: the list, the line, the path and the fix) when a piece is absolute,
        holds '..' or a NUL byte, or the joined path resolves (symlinks followed) outside root or to
        root itself.
    """
    listed = "/".join(names)
    fix = f"list paths relative to the data root {root}, without '..'"
    for name in names:
        pure = PurePosixPath(name)
        if pure.is_absolute():
            raise UserError(f"{where}: path {listed!r} is absolute; {fix}")
        if ".." in pure.parts:
            raise UserError(f"{where}: path {listed!r} holds '..'; {fix}")
        if "\x00" in name:  # no file system takes it (os.stat raises ValueError)
            raise UserError(f"{where}: path {listed!r} holds a NUL byte; remove it from the list")
    relative = PurePosixPath(*names)
    if not relative.parts:
        raise UserError(f"{where}: path {listed!r} names the data root itself, not a video; {fix}")
    path = root.joinpath(*relative.parts)
    if resolve and not is_inside(path, root):
        raise UserError(f"{where}: path {listed!r} resolves to {resolved(path)}, outside the data root {root} "
                        f"(a symlink leads out); copy the video into {root}, or point the root at a folder "
                        "that holds it")
    return path


def check_output(out: Path, option: str, sources: dict[str, Path | None]) -> None:
    """UserError unless the output folder `out` and every source are apart: neither the same folder,
    nor one inside the other (resolved).

    Args:
        out: the output folder (need not exist).
        option: its command-line name, e.g. '--out'.
        sources: option name -> the folder or file read, e.g. {'--root': ..., '--annotations': ...};
            None entries are skipped.
    """
    out_resolved = resolved(out)
    for name, source in sources.items():
        if source is None:
            continue
        source_resolved = resolved(source)
        if out_resolved == source_resolved:
            relation = "is"
        elif out_resolved.is_relative_to(source_resolved):
            relation = "lies inside"
        elif source_resolved.is_relative_to(out_resolved):
            relation = "holds"
        else:
            continue
        raise UserError(f"{option} {out} {relation} {name} {source}: the output would write over or be read as "
                        f"the source; pass an {option} outside the data set and its lists")


def require_inside(path: Path, root: Path, what: str) -> None:
    """UserError unless `path` (about to be written) resolves inside `root` (a symlink planted in
    the output folder must not redirect a write)."""
    if not is_inside(path, root):
        raise UserError(f"{path}: resolves to {resolved(path)}, outside {what} {root} (a symlink leads out); "
                        f"remove the symlink or choose another {what}")


def holds_files(folder: Path) -> bool:
    """Whether `folder` (an existing folder) holds any entry whose name is not hidden ('.name')."""
    with os.scandir(folder) as entries:
        return any(not entry.name.startswith(".") for entry in entries)


_SPECIAL_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"))


def file_kind(path: Path) -> str | None:
    """'file', 'folder', a special kind ('FIFO', 'socket', ...), or None when nothing is there.

    Symlinks are followed (a dangling one is None). An error other than 'not found' (a name too
    long, no permission) raises OSError."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop"
        raise
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "special file")
