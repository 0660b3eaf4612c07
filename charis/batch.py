"""Batch scoring as a library: inputs (manifests, folders), the resumable results file, the
multi-process split/merge, CSV, and :func:`run_batch`, which ties them together (the ``charis batch``
command is a thin shell over it).

Inputs
  * a JSONL manifest: one object per line with ``reference``, ``generated`` and optional ``prompt``
    and ``id`` (relative paths are relative to the manifest's folder);
  * a folder with ``reference/`` and ``generated/`` subfolders: ``generated/NAME.png`` pairs with
    ``reference/NAME.*``, and ``generated/NAME__anything.png`` too (several generations per
    reference); the prompt comes from ``generated/<stem>.txt`` when present.

Results: JSONL, one :class:`PairResult` per line, written as ASCII JSON (no raw U+2028 / U+0085 can
split a line) and read back by splitting on ``\\n`` only. Each line is appended with a single
``write`` on an ``O_APPEND`` descriptor and flushed to disk, so an interrupted run leaves at most one
torn last line, which the reader skips (and :func:`repair` removes). Items already scored without
error are skipped on the next run; failed items are tried again. Whole files (reports, merged
results) are written atomically by :mod:`instruct_identity.core.files`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..core.files import atomic_write_text, clean_stale_temporaries
from .axes import CORE_AXES, DREAMBENCH_AXES
from .config import CharisConfig
from .evaluator import Item
from .images import IMAGE_SUFFIXES
from .results import PairResult
from .summary import Summary, summarize

log = logging.getLogger(__name__)


class ManifestError(InputError):
    def __init__(self, problem: str, fix: str = "", input_name: str = "input"):
        super().__init__(input_name, problem, fix)


def read_items(source: str | Path) -> list[Item]:
    source = Path(source)
    if source.is_dir():
        manifest = source / "manifest.jsonl"
        return read_manifest(manifest) if manifest.is_file() else read_folder(source)
    if source.is_file():
        return read_manifest(source)
    raise ManifestError(f"{source}: no such manifest or folder.", "Give a .jsonl manifest or a folder.")


def _lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (``str.splitlines`` also splits on U+2028, U+0085, ..., which JSON
    strings may hold raw)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def read_manifest(path: Path) -> list[Item]:
    items, seen = [], set()
    base = path.parent
    for n, line in enumerate(_lines(path.read_text(encoding="utf-8")), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ManifestError(f"{path}:{n}: not a JSON object ({e}).", "Write one JSON object per line.") from None
        if not isinstance(row, dict) or not row.get("reference") or not row.get("generated"):
            raise ManifestError(f"{path}:{n}: needs 'reference' and 'generated' paths.",
                                'E.g. {"reference": "ref.png", "generated": "gen.png", "prompt": "..."}')
        if isinstance(row.get("id"), bool) or not isinstance(row.get("id"), (str, int, type(None))):
            raise ManifestError(f"{path}:{n}: 'id' is a {type(row['id']).__name__}.", "Give the id as text.", "id")
        for key in ("reference", "generated", "prompt"):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                raise ManifestError(f"{path}:{n}: '{key}' is a {type(row[key]).__name__}, not text.",
                                    f"Quote the {key} (a JSON string).", input_name=key)
        ref, gen = Path(row["reference"]), Path(row["generated"])
        ref = ref if ref.is_absolute() else base / ref
        gen = gen if gen.is_absolute() else base / gen
        item_id = str(row.get("id") or gen.stem)
        if item_id in seen:
            item_id = f"{item_id}#{n}"
        seen.add(item_id)
        items.append(Item(item_id, ref, gen, row.get("prompt") or ""))
    return items


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def read_folder(folder: Path) -> list[Item]:
    refs = {p.stem: p for p in _images(folder / "reference")}
    gens = _images(folder / "generated")
    if not refs or not gens:
        raise ManifestError(f"{folder}: expected reference/ and generated/ subfolders with images.",
                            "Or put a manifest.jsonl in the folder.")
    items = []
    for g in gens:
        key = g.stem if g.stem in refs else g.stem.split("__")[0]
        if key not in refs:
            log.warning("%s: no reference named %s.*; skipped", g, key)
            continue
        txt = g.with_suffix(".txt")
        prompt = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
        items.append(Item(g.stem, refs[key], g, prompt))
    return items


# --------------------------------------------------------------------------------------------------
# Results files


def append_result(path: Path, result: PairResult) -> None:
    """Append one result line atomically (one write on an O_APPEND descriptor, then fsync)."""
    line = (result.to_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> list[PairResult]:
    """All complete result lines of ``path`` (a torn last line is skipped); the latest line per id wins."""
    if not path.is_file():
        return []
    latest: dict[str, PairResult] = {}
    for n, line in enumerate(_lines(path.read_text(encoding="utf-8")), 1):
        if not line.strip():
            continue
        try:
            r = PairResult.from_dict(json.loads(line))
        except (ValueError, TypeError) as e:
            log.warning("%s:%d: unreadable result line skipped (%s)", path, n, e)
            continue
        latest[r.id] = r
    return list(latest.values())


def write_atomic(path: Path, text: str) -> None:
    """A report, CSV or JSON file, atomically (the pack's one atomic write)."""
    atomic_write_text(path, text)


def rewrite_results(path: Path, results: list[PairResult]) -> None:
    write_atomic(path, "".join(r.to_json() + "\n" for r in results))


def repair(path: Path) -> None:
    """Drop a torn last line left by an interrupted run (rewrites the file atomically)."""
    if path.is_file():
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            rewrite_results(path, read_results(path))


def done_ids(path: Path) -> set[str]:
    return {r.id for r in read_results(path) if r.ok}


# --------------------------------------------------------------------------------------------------
# Multi-process split / merge (accelerate)


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}")


def split(items: list, rank: int, world: int) -> list:
    """The contiguous share of ``items`` for process ``rank`` of ``world`` (what
    ``accelerate.PartialState.split_between_processes`` hands out, usable without a launcher)."""
    n = len(items)
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return items[start:start + per + (1 if rank < extra else 0)]


def merge_parts(out: Path) -> int:
    """Fold every ``<out>.partN`` into ``out`` (atomically) and delete the parts; returns lines merged."""
    parts = sorted(out.parent.glob(f"{out.name}.part*"))
    if not parts:
        return 0
    merged = {r.id: r for r in read_results(out)}
    n = 0
    for p in parts:
        for r in read_results(p):
            merged[r.id] = r
            n += 1
    rewrite_results(out, list(merged.values()))
    for p in parts:
        p.unlink(missing_ok=True)
    return n


@dataclass
class Processes:
    """This process's place among the processes of a (possibly) distributed run."""

    rank: int = 0
    world: int = 1
    state: object | None = None  # accelerate's PartialState when launched with accelerate/torchrun

    def wait(self) -> None:
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()


def processes(config: CharisConfig) -> Processes:
    """Join accelerate's process group when launched with ``accelerate launch`` / ``torchrun`` (else one
    process), and settle ``config.device`` ("auto": this process's own device)."""
    try:
        from accelerate import PartialState

        # "cpu": processes talk over gloo (start them with torchrun); otherwise accelerate's device per process
        state = PartialState(cpu=config.device == "cpu")
        procs = Processes(state.process_index, state.num_processes, state)
        if config.device in ("auto", "cuda") or (procs.world > 1 and config.device != "cpu"):
            config.device = str(state.device)
        return procs
    except Exception as e:  # noqa: BLE001 - accelerate missing or not launched: one process
        log.debug("accelerate not used: %s", e)
        if config.device == "auto":
            config.device = "cpu"
        return Processes()


# --------------------------------------------------------------------------------------------------
# The batch


@dataclass
class BatchOutcome:
    out: Path
    results: list[PairResult] = field(default_factory=list)  # every item of the input (rank 0), in --out
    scored_now: int = 0
    skipped: int = 0
    summary: Summary | None = None

    @property
    def failed(self) -> list[PairResult]:
        return [r for r in self.results if not r.ok]


def check_paths(source: str | Path, out: str | Path, extra: dict[str, str | Path | None] | None = None) -> None:
    """Refuse an output file that is the input (or another output): results would be appended to it."""
    src = Path(source).resolve()
    manifest = src / "manifest.jsonl" if src.is_dir() else src
    targets = {"--out": Path(out).resolve(), **{k: Path(v).resolve() for k, v in (extra or {}).items() if v}}
    for name, target in targets.items():
        if target == manifest or target == src:
            raise InputError(name, f"{target} is the input manifest; results would be written into it.",
                             "Give a different file, e.g. results.jsonl.")
    seen: dict[Path, str] = {}
    for name, target in targets.items():
        if target in seen:
            raise InputError(name, f"is the same file as {seen[target]} ({target}).", "Give each output its own file.")
        seen[target] = name


def run_batch(config: CharisConfig, source: str | Path, out: str | Path, *, workers: int = 1, resume: bool = True,
              evaluator=None, progress: Callable[[int, int], None] | None = None) -> BatchOutcome:
    """Score every item of ``source`` into the results file ``out``: resumable (items already scored
    are skipped, failed ones retried), and split across processes when launched with accelerate /
    torchrun (each writes ``<out>.partN``; rank 0 merges). ``progress(done, total)`` after each item
    of this process. Returns the outcome (the full results on rank 0)."""
    from .evaluator import Evaluator

    out = Path(out)
    check_paths(source, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    procs = processes(config)
    if procs.rank == 0:
        removed = clean_stale_temporaries(out.parent)
        if removed:
            log.info("removed %d half-written temporary file(s) left by an interrupted run", len(removed))
        merge_parts(out)  # leftovers of an interrupted multi-process run
        repair(out)
        if not resume:
            out.unlink(missing_ok=True)
    procs.wait()

    items = read_items(source)
    done = done_ids(out) if resume else set()
    todo = [it for it in items if it.id not in done]
    mine = split(todo, procs.rank, procs.world)
    target = out if procs.world == 1 else part_path(out, procs.rank)
    if procs.rank == 0:
        log.info("%d items, %d already scored, %d to score on %d process(es)", len(items), len(items) - len(todo),
                 len(todo), procs.world)
    ev = evaluator or Evaluator(config)
    ev.judge  # noqa: B018 - a bad VLM setting fails here, before any scoring
    n = 0
    for r in ev.score_batch(mine, workers=max(1, workers)):
        append_result(target, r)
        n += 1
        if progress:
            progress(n, len(mine))
    procs.wait()
    outcome = BatchOutcome(out, scored_now=n, skipped=len(items) - len(todo))
    if procs.rank != 0:
        return outcome
    if procs.world > 1:
        merge_parts(out)
    wanted = {it.id for it in items}
    outcome.results = [r for r in read_results(out) if r.id in wanted]
    outcome.summary = summarize(outcome.results, config.selected_axes())
    return outcome


# --------------------------------------------------------------------------------------------------
# CSV


def axis_columns(results: list[PairResult]) -> list[str]:
    seen = []
    for r in results:
        for a in r.axes:
            if a not in seen:
                seen.append(a)
    order = list(CORE_AXES) + ["clip_score"] + list(DREAMBENCH_AXES)
    return [a for a in order if a in seen] + [a for a in seen if a not in order]


def cell(text) -> str:
    """A CSV text cell that no spreadsheet runs as a formula (a leading = + - @ tab or CR gets a ')."""
    text = "" if text is None else str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(results: list[PairResult]) -> str:
    cols = axis_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "reference", "generated", "prompt", "composite", "label", "mode", "composite_axes",
                "missing_axes", "passed", *cols, "error"])
    for r in results:
        c = r.composite
        w.writerow([cell(r.id), cell(r.reference), cell(r.generated), cell(r.prompt), _num(c.value if c else None),
                    cell(c.label if c and c.value is not None else "CHARIS absent" if c else ""),
                    c.mode if c else "", " ".join(c.axes_used) if c else "", " ".join(c.axes_missing) if c else "",
                    "" if not c or c.passed is None else str(c.passed).lower(),
                    *[_num(r.axes[a].value) if a in r.axes else "" for a in cols], cell(r.error)])
    return buf.getvalue()


def _num(v) -> str:
    return "" if v is None else f"{v:.6f}"
