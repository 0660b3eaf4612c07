"""Character sheets as files, and the batch plan that makes them.

A *sheet* is one picture laid out by a :class:`~instruct_identity.core.regions.RegionLayout` (usually
a grid), generated for one character. Next to ``alice_00001_.png`` the Save Sheet node writes
``alice_00001_.sheet.json`` (and the same JSON in the PNG's ``instruct_identity_sheet`` text chunk)::

    {"format": "instruct-identity-sheet", "version": 1, "character": "alice",
     "description": "...", "base_prompt": "...", "seed": 123, "image": "alice_00001_.png",
     "layout": {"width": .., "height": .., "grid": {..}, "regions": [{"x", "y", "w", "h", "prompt", "caption"}]}}

The batch plan turns a list of characters and a list of poses into one sheet per character with a
deterministic seed derived from the character's name (adding or reordering characters does not
change anyone else's seed) and a file name that carries the name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError, closest
from ..core.files import atomic_write_text
from ..core.limits import MAX_REGIONS, MAX_SHEETS_PER_BATCH
from ..core.regions import RegionLayout, grid_layout, prompt_lines

SHEET_FORMAT = "instruct-identity-sheet"
SHEET_VERSION = 1
PNG_KEY = "instruct_identity_sheet"
SIDECAR_SUFFIX = ".sheet.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
INPUT_FORMATS = ("auto", "lines", "csv", "json")

DEFAULT_BASE_TEMPLATE = "character sheet of {description}, the same character in every panel, consistent outfit and colours, plain white background"
DEFAULT_CELL_TEMPLATE = "{description}, {pose}, full body, plain white background"


# --------------------------------------------------------------------------------------------------
# Characters and poses


@dataclass(frozen=True)
class Character:
    name: str
    description: str
    poses: tuple[str, ...] = ()   # per-character poses (override the shared list when given)


def safe_name(name: str, fallback: str = "character") -> str:
    """A file-name-safe version of ``name`` (letters, digits, ``-``, ``_``, ``.``; at most 64 chars)."""
    s = re.sub(r"[^\w.-]+", "_", str(name).strip(), flags=re.UNICODE).strip("._")
    return s[:64] or fallback


def item_seed(seed: int, name: str) -> int:
    """Deterministic per-character seed: depends on the base seed and the name only."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode("utf-8")).hexdigest()
    return int(digest[:8], 16)


def _name_from(description: str) -> str:
    words = re.findall(r"\w+", description, flags=re.UNICODE)
    return "_".join(words[:3]) or "character"


def _split_poses(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in re.split(r"[;|\n]", str(value)) if p.strip())


_NAME_COLS = ("name", "character", "id")
_DESC_COLS = ("description", "descriptor", "identity", "prompt", "desc")
_POSE_COLS = ("poses", "pose", "scenes")


def detect_format(text: str) -> str:
    s = str(text or "").lstrip()
    if s.startswith("[") or s.startswith("{"):
        return "json"
    first = s.splitlines()[0].lower() if s else ""
    cols = [c.strip() for c in next(csv.reader([first]), [])] if first else []
    if len(cols) >= 2 and any(c in _NAME_COLS for c in cols) and any(c in _DESC_COLS for c in cols):
        return "csv"
    return "lines"


def parse_characters(text: str, fmt: str = "auto", name: str = "characters") -> list[Character]:
    """Characters from multiline text (``name: description`` per line), CSV (a header with
    name/description and optional poses columns) or JSON (a list of strings or of
    ``{"name", "description", "poses"}`` objects, or ``{"characters": [...]}``)."""
    if fmt not in INPUT_FORMATS:
        raise InputError("format", f"'{fmt}' is not a format.", f"Choose one of {', '.join(INPUT_FORMATS)}.")
    fmt = detect_format(text) if fmt == "auto" else fmt
    if fmt == "json":
        out = _characters_json(text, name)
    elif fmt == "csv":
        out = _characters_csv(text, name)
    else:
        out = []
        for line in prompt_lines(text):
            if ":" in line:
                n, d = line.split(":", 1)
                n, d = n.strip(), d.strip()
                if not d:
                    raise InputError(name, f"'{line}' has a name but no description.", "Write 'name: description'.")
                out.append(Character(n or _name_from(d), d))
            else:
                out.append(Character(_name_from(line), line))
    if not out:
        raise InputError(name, "no characters found.", "Write one 'name: description' per line (or CSV / JSON).")
    return _unique_names(out)


def _loads(text: str, name: str, fix: str, what: str = ""):
    """JSON, or an :class:`InputError` naming ``name`` (bad syntax, nesting too deep for the parser)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(name, f"{what}not valid JSON ({e.msg} at line {e.lineno}).", fix) from None
    except RecursionError:
        raise InputError(name, f"{what}JSON nested too deeply.", fix) from None


def _characters_json(text: str, name: str) -> list[Character]:
    data = _loads(text, name, 'Write [{"name": "alice", "description": "...", "poses": ["..."]}].')
    if isinstance(data, dict):
        data = data.get("characters", [])
    if not isinstance(data, list):
        raise InputError(name, "the JSON is not a list of characters.", 'Write [{"name": "alice", "description": "..."}].')
    out = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            out.append(Character(_name_from(item), item.strip()))
        elif isinstance(item, dict):
            desc = next((str(item[k]) for k in _DESC_COLS if k in item), "").strip()
            if not desc:
                raise InputError(name, f"character {i + 1} has no description.", 'Give each object a "description".')
            n = next((str(item[k]) for k in _NAME_COLS if k in item), "").strip() or _name_from(desc)
            out.append(Character(n, desc, _split_poses(next((item[k] for k in _POSE_COLS if k in item), None))))
        else:
            raise InputError(name, f"character {i + 1} is neither a string nor an object.")
    return out


def _characters_csv(text: str, name: str) -> list[Character]:
    reader = csv.reader(io.StringIO(str(text).strip()), strict=True)
    rows, start = [], 1
    try:
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as e:  # strict: a stray or unclosed quote is an error, not a field that eats the rest
        if "end of data" in str(e):
            problem = f"CSV line {start}: a quoted field is never closed (its quote runs to the end of the text)."
        else:
            problem = f"CSV line {start} is malformed: {e}."
        raise InputError(name, problem, 'Close every opening quote ("like, this"), double a quote inside a quoted field '
                                        '("say ""hi"""), or remove the quotes.') from None
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]

    def col(options):
        return next((header.index(c) for c in options if c in header), None)

    ni, di, pi = col(_NAME_COLS), col(_DESC_COLS), col(_POSE_COLS)
    if di is None:
        raise InputError(name, "the CSV header has no description column.", "Name the columns name,description[,poses].")
    out = []
    for r, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        desc = row[di].strip() if di < len(row) else ""
        if not desc:
            raise InputError(name, f"CSV line {r} has no description.")
        n = row[ni].strip() if ni is not None and ni < len(row) and row[ni].strip() else _name_from(desc)
        poses = _split_poses(row[pi]) if pi is not None and pi < len(row) else ()
        out.append(Character(n, desc, poses))
    return out


def _unique_names(chars: list[Character]) -> list[Character]:
    seen: dict[str, int] = {}
    out = []
    for c in chars:
        key = safe_name(c.name).lower()
        seen[key] = seen.get(key, 0) + 1
        out.append(c if seen[key] == 1 else Character(f"{c.name}_{seen[key]}", c.description, c.poses))
    return out


def parse_poses(text: str, name: str = "poses") -> list[str]:
    """Poses/scenes: one per line, or a JSON list of strings."""
    s = str(text or "").strip()
    if s.startswith("["):
        data = _loads(s, name, "Write one pose per line, or a JSON list of strings.")
        return [str(p).strip() for p in data if str(p).strip()]
    return prompt_lines(s)


# --------------------------------------------------------------------------------------------------
# The batch plan


@dataclass(frozen=True)
class SheetPlan:
    character: Character
    base_prompt: str
    cell_prompts: tuple[str, ...]
    captions: tuple[str, ...]
    seed: int
    filename_prefix: str

    @property
    def name(self) -> str:
        return self.character.name


_PLACEHOLDER = re.compile(r"\{([^{}\s]*)\}")


def check_template(template: str, allowed, name: str) -> None:
    """Refuse ``{placeholders}`` the template cannot fill (a typo would otherwise reach the prompt)."""
    for m in _PLACEHOLDER.finditer(str(template)):
        key = m.group(1)
        if key not in allowed:
            near = closest(key, allowed)
            known = ", ".join("{" + a + "}" for a in allowed)
            raise InputError(name, f"unknown placeholder {{{key}}}.",
                             (f"Did you mean {{{near}}}? " if near else "") + f"Use {known}.")


def fill(template: str, **values: str) -> str:
    out = str(template)
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def plan_sheets(characters: str, poses: str, seed: int = 0, fmt: str = "auto", base_template: str = DEFAULT_BASE_TEMPLATE,
                cell_template: str = DEFAULT_CELL_TEMPLATE, folder: str = "character_sheets", max_cells: int | None = None) -> list[SheetPlan]:
    """One :class:`SheetPlan` per character (characters x poses)."""
    check_template(base_template, ("name", "description"), "base_template")
    check_template(cell_template, ("pose", "name", "description"), "cell_template")
    chars = parse_characters(characters, fmt)
    if len(chars) > MAX_SHEETS_PER_BATCH:
        raise InputError("characters", f"{len(chars)} characters, more than the {MAX_SHEETS_PER_BATCH} sheets one batch may queue.",
                         "Split the list over several runs (the server's owner can raise II_MAX_SHEETS_PER_BATCH, docs/limits.md).")
    shared = parse_poses(poses) if str(poses or "").strip() else []
    plans = []
    folder = "/".join(safe_name(p, "sheets") for p in re.split(r"[\\/]+", str(folder or "").strip()) if p.strip())
    for c in chars:
        ps = list(c.poses) or shared
        if not ps:
            raise InputError("poses", f"no poses for '{c.name}'.", "Write one pose per line (or give the character its own poses).")
        if len(ps) > MAX_REGIONS:
            raise InputError("poses", f"'{c.name}' has {len(ps)} poses, more than the {MAX_REGIONS} cells a sheet may have.",
                             "Use fewer poses per sheet (split them over several characters' sheets).")
        if max_cells is not None and len(ps) > max_cells:
            raise InputError("poses", f"'{c.name}' has {len(ps)} poses but the sheet has {max_cells} cells.",
                             "Add rows or columns to the grid, or remove poses.")
        values = {"name": c.name, "description": c.description}
        plans.append(SheetPlan(
            character=c,
            base_prompt=fill(base_template, **values),
            cell_prompts=tuple(fill(cell_template, pose=p, **values) for p in ps),
            captions=tuple(ps),
            seed=item_seed(seed, c.name),
            filename_prefix=(f"{folder}/" if folder else "") + safe_name(c.name),
        ))
    return plans


# --------------------------------------------------------------------------------------------------
# Sheet metadata on disk


@dataclass
class SheetInfo:
    layout: RegionLayout
    character: str = ""
    description: str = ""
    base_prompt: str = ""
    seed: int | None = None
    image: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"format": SHEET_FORMAT, "version": SHEET_VERSION, "character": self.character, "description": self.description,
             "base_prompt": self.base_prompt, "seed": self.seed, "image": self.image, "layout": self.layout.to_dict()}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str = "sheet") -> "SheetInfo":
        if not isinstance(data, dict) or "layout" not in data:
            raise InputError(where, "is not an Instruct Identity sheet description (no layout).")
        known = {"format", "version", "character", "description", "base_prompt", "seed", "image", "layout"}
        return cls(RegionLayout.from_dict(data["layout"], name=where), str(data.get("character", "") or ""),
                   str(data.get("description", "") or ""), str(data.get("base_prompt", "") or ""),
                   data.get("seed"), str(data.get("image", "") or ""), {k: v for k, v in data.items() if k not in known})


def sidecar_path(image_path: Path) -> Path:
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + SIDECAR_SUFFIX)


def write_sidecar(image_path: Path, info: SheetInfo) -> Path:
    info.image = Path(image_path).name
    path = sidecar_path(image_path)
    atomic_write_text(path, json.dumps(info.to_dict(), indent=1, ensure_ascii=False))
    return path


def read_sheet_info(image_path: Path) -> SheetInfo | None:
    """The sheet's description from its sidecar, else from the PNG text chunk; ``None`` if neither."""
    image_path = Path(image_path)
    side = sidecar_path(image_path)
    if side.is_file():
        try:
            text = side.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = "\x00"  # reported as not valid JSON
        data = _loads(text, "sheet", "Delete it or save the sheet again.", f"{side} is ")
        return SheetInfo.from_dict(data, str(side))
    if image_path.suffix.lower() == ".png" and image_path.is_file():
        text = _png_sheet_chunk(image_path)
        if text:
            data = _loads(text, "sheet", "Save the sheet again (or put a .sheet.json next to it).",
                          f"{image_path}'s sheet description is ")
            return SheetInfo.from_dict(data, str(image_path))
    return None


def _png_sheet_chunk(path: Path) -> str | None:
    """The sheet chunk of a PNG: from the header when it sits before the pixels (as Pillow and ComfyUI
    write it), else after decoding. Empty, unreadable, truncated or oversized files (checked from the
    header, before decoding) raise :class:`InputError` naming the file."""
    from ..core.imagefile import open_image

    with open_image(path, name="sheet", decode=False) as im:
        text = im.info.get(PNG_KEY)
        if text is None:
            try:
                text = (getattr(im, "text", None) or {}).get(PNG_KEY)   # chunks after the pixels: decodes
            except (OSError, ValueError, SyntaxError) as e:
                raise InputError("sheet", f"{path} is truncated or corrupt ({e}).", "Re-export or replace the file.") from None
    return text if isinstance(text, str) else None


def find_sheets(folder: Path, recursive: bool = True) -> list[Path]:
    """Pictures under ``folder`` (sorted), sheets or not; :func:`read_sheet_info` tells which are."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise InputError("sheets", f"{folder} is not a folder.", "Point it at the folder the sheets were saved in.")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def uniform_info(rows: int, cols: int, gutter: int, width: int, height: int, prompts: list[str] | None = None) -> SheetInfo:
    """Sheet description for a picture that has none (a plain grid given on the command line)."""
    return SheetInfo(grid_layout(width, height, rows, cols, gutter, prompts or []))
