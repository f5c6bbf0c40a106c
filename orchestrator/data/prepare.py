"""`actionlab data prepare`: a copy of a data set in a format that is cheap to sample clips from.

A clip's frames are scattered over the video, and each seek decodes from the key frame before the
wanted frame. Downloaded videos are encoded for playback, with x264's default of a key frame
every 250 frames: a TSN clip of K = 3 frames out of a 300-frame Kinetics clip then decodes most
of the video. Two training formats, picked by `PrepareParams.format`:

- 'h264': H.264 in .mp4, scaled down to `short_side`, a key frame at least every
  `keyframe_interval` frames (a seek decodes fewer than that many frames);
- 'frames': one JPEG per frame, `<video>/img_00001.jpg, ...` (TSN's and MMAction2's rawframes):
  nothing is decoded but the sampled frames, at several times the bytes.

The layout is kept, so that an experiment's `data.root` and `data.annotations` point at the copy
and read the same video ids (flow caches and score files are keyed by them) and labels:

    <out>/<root's name>/<relative path>.mp4       'h264' (the folder <relative path>/ for 'frames')
    <out>/<annotations' name>                     split files or CSV(s), video names rewritten
    <out>/manifest.json                           data set, source, parameters, and whether complete

Frames are decoded in order with PyAV, turned upright as decord turns them (a rotation in the
container's display matrix; the copy carries none), and scaled with area averaging. Each video is
written under a temporary name and renamed, so an interrupted run leaves no half-written video and
a rerun does only what is missing, after removing what the interrupted run left half-written
(`tasks.remove_stale_temporaries`); a rerun with other parameters is refused. A video that cannot
be decoded is reported with its path and reason, and the others are still done.

The manifest says `"complete": false` from the start of a run until every listed video was tried
and the lists written; reading a copy in that state (training, `data check`, `flow`) is refused
(`annotations.require_finished`). `--out` must be apart from the data set: neither the root nor
the lists' folder, nor inside or around them (`paths.check_output`). Lists that name a path outside
the root, or a LabelConflict (two files with one video id would become one prepared file), are
refused before anything is written.
"""
import csv
import io
import json
import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from orchestrator.data.annotations import (DATASETS, OUTPUT_MANIFEST, SPLIT_NUMBERS, Problem, read_all_subsets,
                                           require_consistent)
from orchestrator.data.paths import check_output, holds_files, require_inside
from orchestrator.data.tasks import remove_stale_temporaries, run_per_video, temporary_sibling, write_atomic
from orchestrator.errors import UserError

FORMATS = ("h264", "frames")
MANIFEST_NAME = OUTPUT_MANIFEST
WRITTEN_BY = "actionlab data prepare"  # the manifest's `written_by`: annotations.require_finished reads it
_STATE_KEYS = ("written_by", "complete", "videos", "failed")  # what a rerun rewrites; the rest must match
NUMBERED_SPLITS = ("ucf101", "hmdb51")  # the other readers ignore the split number
DEFAULT_FPS = 30  # for a stream that states no frame rate (the frames are indexed, never timed)


class PrepareParams(NamedTuple):
    """How each video is transcoded."""

    format: str = "h264"  # one of FORMATS
    short_side: int = 256  # Kinetics' usual '256p' training copy; a video already smaller keeps its size
    # Measured, TSN K=3 training clips/s on one core (VideoDataset, decord 1 thread), Kinetics-sized
    # textured, moving video (340x256, 300 frames, 30 fps) at ~1 Mbit/s with x264's keyint 250:
    # raw 9.2; prepared (crf 23) keyint 250: 14.9, 64: 23.2, 32: 32.0, 16: 39.7 (4.3x raw), 8: 40.1;
    # bytes vs raw 0.47x, 0.54x, 0.66x, 0.88x, 1.31x. 16 is the knee: 8 buys nothing for 1.5x the bytes.
    keyframe_interval: int = 16
    crf: int = 23  # x264's own default; 18 (visually lossless) costs 1.5x the bytes on that video
    jpeg_quality: int = 95  # 'frames' only: Pillow's highest recommended, as denseflow's rawframes

    def recorded(self) -> dict:
        """The fields that shape this format's output: what the manifest records and compares."""
        unused = ("jpeg_quality",) if self.format == "h264" else ("keyframe_interval", "crf")
        return {k: v for k, v in self._asdict().items() if k not in unused}


class PrepareSummary(NamedTuple):
    """What one `prepare_dataset` run did, and where an experiment finds the result."""

    root: Path  # the prepared videos: an experiment's data.root
    annotations: Path  # the rewritten split files or CSV: its data.annotations
    problems: list[Problem]  # entries of the split files that name no video (left out, as training would)
    prepared: int  # videos transcoded in this run
    done_before: int  # videos an earlier run had already prepared
    failed: list[tuple[Path, str]]  # (source video, reason)
    bytes_before: int  # source bytes of the videos prepared in this run
    bytes_after: int  # their bytes once prepared
    seconds: float  # wall time of the run

    def describe(self) -> str:
        """One line: counts, bytes before -> after and time."""
        mib = 2 ** 20
        ratio = f" ({self.bytes_after / self.bytes_before:.2f}x)" if self.bytes_before else ""
        return (f"{self.prepared} prepared, {self.done_before} already done, {len(self.failed)} failed; "
                f"{self.bytes_before / mib:.1f} MiB -> {self.bytes_after / mib:.1f} MiB{ratio} "
                f"in {self.seconds:.1f} s = {self.prepared / max(self.seconds, 1e-9):.2f} videos/s")


def check_params(params: PrepareParams) -> None:
    """UserError naming the command-line option of the first invalid field."""
    if params.format not in FORMATS:
        raise UserError(f"--format {params.format!r} is not one of {', '.join(FORMATS)}")
    if params.short_side < 16:
        raise UserError(f"--short-side must be at least 16 pixels, got {params.short_side}")
    if params.keyframe_interval < 1:
        raise UserError(f"--keyframe-interval must be at least 1 frame, got {params.keyframe_interval}")
    if not 0 <= params.crf <= 51:
        raise UserError(f"--crf must be in 0..51 (x264's range; 23 its default), got {params.crf}")
    if not 1 <= params.jpeg_quality <= 95:
        raise UserError(f"--jpeg-quality must be in 1..95 (Pillow: above 95 only grows files), got "
                        f"{params.jpeg_quality}")


# --- one video ------------------------------------------------------------------------------

def prepared_name(name: str, fmt: str) -> str:
    """A video's relative path ('/'-separated) in the prepared copy: the suffix becomes .mp4
    ('h264') or goes ('frames': a folder). Its video id, the path without suffix, is unchanged."""
    return PurePosixPath(name).with_suffix(".mp4" if fmt == "h264" else "").as_posix()


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(W, H) of the prepared frames: scaled down so min(W, H) == short_side (never up), aspect
    kept, both the nearest even number, halves up (H.264's yuv420p needs even sizes; frame folders
    get the same size)."""
    scale = min(1.0, short_side / min(width, height))
    return tuple(max(2, int(side * scale / 2 + 0.5) * 2) for side in (width, height))


def _scaled_frames(container, stream, short_side: int):
    """Every frame of `stream`, uint8 RGB (H, W, 3) one at a time, upright as decord shows it
    (`video_io.upright`), with the short side at `output_size`'s."""
    from orchestrator.data.video_io import upright

    size = None
    for frame in container.decode(stream):
        size = size or output_size(frame.width, frame.height, short_side)  # the short side is a side either way
        yield upright(frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA"),
                      frame.rotation)


def _counted(frames, counter: list[int]):
    """`frames` unchanged, counting them in counter[0] as they stream by (the writers consume them)."""
    for frame in frames:
        counter[0] += 1
        yield frame


def _bytes(path: Path) -> int:
    """Bytes of a file, or of the files in a folder (a frame folder has no subfolders)."""
    if path.is_dir():
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prepare_video(src: Path, dst: Path, params: PrepareParams) -> int:
    """Transcode one video into `dst` (a .mp4 file, or a frame folder), atomically.

    Decoding and encoding run on one thread each: a Ray task holds one CPU.

    Returns:
        bytes written.

    Raises:
        any decoding error; ValueError when fewer frames decode than the container claims
        (a truncated file, which `actionlab data check` reports too) or none at all.
    """
    import av

    from orchestrator.data.video_io import write_frame_folder, write_video

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(dst, dst.suffix)  # the suffix picks the muxer
    try:
        with av.open(str(src)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            claimed, counter = stream.frames, [0]  # claimed: 0 where the container states no count
            frames = _counted(_scaled_frames(container, stream, params.short_side), counter)
            if params.format == "h264":
                write_video(tmp, frames, fps=stream.average_rate or DEFAULT_FPS, crf=params.crf,
                            keyframe_interval=params.keyframe_interval, threads=1)
            else:
                write_frame_folder(tmp, frames, quality=params.jpeg_quality)
        if counter[0] == 0:
            raise ValueError("no frame decodes")
        if counter[0] < claimed:
            raise ValueError(f"truncated: {counter[0]} of the {claimed} frames the container claims decode")
        written = _bytes(tmp)
        os.replace(tmp, dst)
        return written
    finally:
        _remove(tmp)


class _VideoResult(NamedTuple):
    path: Path
    bytes_before: int
    bytes_after: int
    error: str | None  # None on success


def _prepare_or_report(src: Path, dst: Path, params: PrepareParams) -> _VideoResult:
    """prepare_video, with any failure turned into a reason (one bad video must not stop a run)."""
    try:
        return _VideoResult(src, src.stat().st_size, prepare_video(src, dst, params), None)
    except Exception as err:  # noqa: BLE001 - reported per video, the run goes on
        return _VideoResult(src, 0, 0, f"{type(err).__name__}: {err}")


# --- annotations ----------------------------------------------------------------------------

_FIRST_FIELD = re.compile(r"^(\s*)(\S+)(.*)$", re.S)  # UCF-101: '<Class>/<video>.avi [label]'
_ALL_BUT_LAST_FIELD = re.compile(r"^(\s*)(\S.*?)(\s+\S+\s*)$", re.S)  # HMDB-51: '<video file> <tag>'


def _rename_lines(text: str, pattern: re.Pattern, fmt: str) -> str:
    """Each line's video name (group 2 of `pattern`) as `prepared_name`; line endings (CRLF) kept."""
    def rename(line: str) -> str:
        match = pattern.match(line)
        return line if match is None else match[1] + prepared_name(match[2], fmt) + match[3]

    return "".join(rename(line) for line in text.splitlines(keepends=True))


def _rename_csv_paths(text: str, fmt: str) -> str:
    """A `path,label` CSV with each path as `prepared_name`; other columns kept."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames or ["path", "label"], lineterminator="\n")
    writer.writeheader()
    for row in reader:
        path = (row.get("path") or "").strip()
        writer.writerow({**row, "path": prepared_name(path, fmt) if path else row.get("path")})
    return out.getvalue()


def _rewritten(dataset: str, file: Path, fmt: str) -> bytes:
    """A file of `dataset`'s annotations as the prepared copy needs it: the lists that name videos
    rewritten; the others (classInd.txt, Kinetics CSVs, which name no file) as they are."""
    try:
        return _rewritten_text(dataset, file, fmt)
    except UnicodeDecodeError as err:  # e.g. another split's file, which this run did not read
        raise UserError(f"{file}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at byte {err.start}); save "
                        "the list as UTF-8") from None


def _rewritten_text(dataset: str, file: Path, fmt: str) -> bytes:
    if dataset == "ucf101" and re.fullmatch(r"(train|test)list\d+\.txt", file.name):
        return _rename_lines(file.read_text(encoding="utf-8"), _FIRST_FIELD, fmt).encode()
    if dataset == "hmdb51" and re.fullmatch(r".+_test_split\d+\.txt", file.name):
        return _rename_lines(file.read_text(encoding="utf-8"), _ALL_BUT_LAST_FIELD, fmt).encode()
    if dataset == "csv":
        return _rename_csv_paths(file.read_text(encoding="utf-8"), fmt).encode()
    return file.read_bytes()


def write_annotations(dataset: str, annotations: Path, target: Path, fmt: str) -> Path:
    """Copy a data set's split folder or CSV to `target`, each video name as `prepared_name`.

    A folder's regular files are copied (rewritten where they name videos); anything in subfolders,
    and special files (a FIFO would block the read), are not.
    """
    if annotations.is_dir():
        for file in sorted(p for p in annotations.iterdir() if p.is_file()):
            write_atomic(target / file.name, _rewritten(dataset, file, fmt))
    else:
        write_atomic(target, _rewritten(dataset, annotations, fmt))
    return target


# --- data set -------------------------------------------------------------------------------

def _check_or_write_manifest(out: Path, manifest: dict) -> None:
    """Write out/manifest.json marked incomplete (this run has begun); UserError if `out` holds files but
    no manifest of ours, or ours records other parameters. `manifest`: 'dataset', 'source' and the
    parameters (`PrepareParams.recorded`)."""
    path = out / MANIFEST_NAME
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder; pass a new or empty folder")
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            existing = None
        # before "written_by", a manifest held the data set, the source and the parameters
        if not isinstance(existing, dict) or existing.get("written_by", WRITTEN_BY) != WRITTEN_BY or not {
                "dataset", "source", "format"} <= set(existing):
            raise UserError(f"{path}: not a manifest of `actionlab data prepare`; pass a new or empty --out")
        mismatches = [f"{key} is {existing.get(key)!r} there but {manifest.get(key)!r} now"
                      for key in {**existing, **manifest} if key not in _STATE_KEYS
                      and existing.get(key) != manifest.get(key)]
        if mismatches:
            raise UserError(f"{path}: {out} was prepared with other parameters ({'; '.join(mismatches)}); pass "
                            f"another --out, or delete {out} to prepare it again")
    elif path.exists() or path.is_symlink():
        raise UserError(f"{path}: not a manifest of `actionlab data prepare` (not a regular file); pass a new or "
                        "empty --out")
    elif out.is_dir() and holds_files(out):
        raise UserError(f"--out {out}: a folder that holds other files and no {MANIFEST_NAME} of `actionlab data "
                        "prepare`; pass a new or empty folder")
    write_atomic(path, json.dumps({"written_by": WRITTEN_BY, **manifest, "complete": False}, indent=2).encode())


def _mark_complete(out: Path, manifest: dict, videos: int, failed: int) -> None:
    """The manifest, once every video was tried and the lists written: a reader may use the copy."""
    fields = {"written_by": WRITTEN_BY, **manifest, "complete": True, "videos": videos, "failed": failed}
    write_atomic(out / MANIFEST_NAME, json.dumps(fields, indent=2).encode())


def _prepare_videos(records, *, root: Path, out_root: Path, params: PrepareParams, use_ray: bool = True,
                   address: str | None = None, progress: bool = True) -> tuple[list[_VideoResult], int]:
    """Transcode every record's video not prepared yet to the same relative path under `out_root`.

    Returns:
        (one _VideoResult per video transcoded or failed in this run, number already prepared).
    Raises:
        UserError when two videos would be written to one path, or a path resolves outside `out_root`
        (a symlink in the copy), before anything is written.
    """
    from tqdm import tqdm

    jobs, source_of = [], {}
    for record in records:
        src = Path(record.path)
        dst = out_root / prepared_name(src.relative_to(root).as_posix(), params.format)
        if source_of.setdefault(dst, src) != src:
            raise UserError(f"{src} and {source_of[dst]} would both be prepared as {dst} (the same video id); "
                            "rename one of them in the list and on disk")
        require_inside(dst, out_root, "the prepared copy")
        jobs.append((src, dst))
    remove_stale_temporaries(dst.parent for _, dst in jobs)  # a killed run's half-written videos
    todo = [(src, dst) for src, dst in jobs if not dst.exists()]
    with tqdm(total=len(todo), unit="video", desc=f"prepare ({params.format})", disable=not progress) as bar:
        results = run_per_video(_prepare_or_report, todo, shared=(params,), use_ray=use_ray, address=address,
                                failed=lambda job, reason: _VideoResult(job[0], 0, 0, reason), bar=bar)
    return results, len(jobs) - len(todo)


def prepare_dataset(dataset: str, *, root: str | Path, annotations: str | Path, out: str | Path,
                    params: PrepareParams = PrepareParams(), split: int | None = None, use_ray: bool = True,
                    address: str | None = None, progress: bool = True) -> PrepareSummary:
    """Transcode every video a data set's split files list, keeping its layout (module docstring).

    Args:
        dataset: a key of annotations.DATASETS.
        root, annotations: as for `read_split`.
        out: folder of the copy; gets <root's name>/, <annotations' name> and manifest.json.
        params: format and encoding.
        split: only the videos of this split number; None: of every split (UCF-101, HMDB-51 list
            a different part of their videos in each).
        use_ray: one Ray task per video (connects to `address` unless Ray is already initialised);
            False runs the same per-video function in a loop.
        progress: show a tqdm bar.

    Returns:
        PrepareSummary; failed videos are listed there with their reason, the others are done.
    """
    check_params(params)
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r} is not known; use one of {', '.join(DATASETS)}")
    root, annotations, out = (Path(p).expanduser().absolute() for p in (root, annotations, out))
    check_output(out, "--out", {"--root": root, "--annotations": annotations})
    if len({root.name, annotations.name, MANIFEST_NAME}) < 3:
        raise UserError(f"--root {root} and --annotations {annotations} are copied into {out} under their names, "
                        f"beside {MANIFEST_NAME}: those three names must differ; rename one")
    splits = (split,) if split is not None else SPLIT_NUMBERS if dataset in NUMBERED_SPLITS else (1,)
    records, problems, seen = [], [], set()
    for number in splits:
        part = read_all_subsets(dataset, root=root, annotations=annotations, split=number)
        require_consistent(part)  # e.g. x.avi and x.mp4 would become one prepared x.mp4
        records += [r for r in part.records if r.path not in seen]
        seen.update(r.path for r in part.records)
        problems += [p for p in part.problems if p not in problems]

    start = time.perf_counter()
    manifest = {"dataset": dataset, "source": str(root), **params.recorded()}
    require_inside(out / MANIFEST_NAME, out, "--out")
    _check_or_write_manifest(out, manifest)
    remove_stale_temporaries([out, out / annotations.name])  # a killed run's half-written manifest or lists
    results, done_before = _prepare_videos(records, root=root, out_root=out / root.name, params=params,
                                          use_ray=use_ray, address=address, progress=progress)
    require_inside(out / annotations.name, out, "--out")
    target = write_annotations(dataset, annotations, out / annotations.name, params.format)
    ok = [r for r in results if r.error is None]
    failed = [(r.path, r.error) for r in results if r.error is not None]
    _mark_complete(out, manifest, videos=len(records), failed=len(failed))
    return PrepareSummary(root=out / root.name, annotations=target, problems=problems, prepared=len(ok),
                          done_before=done_before, failed=failed,
                          bytes_before=sum(r.bytes_before for r in ok), bytes_after=sum(r.bytes_after for r in ok),
                          seconds=time.perf_counter() - start)
