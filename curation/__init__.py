"""Character sheets -> training pairs for the identity LoRA (library and CLI; no ComfyUI needed).

``python -m instruct_identity.curation SHEETS DATASET`` cuts every sheet along its layout, drops
blank and near-duplicate cells, pairs the rest (reference, target, caption of the target cell),
optionally filters the pairs with CHARIS, and appends them to ``DATASET/pairs.jsonl`` + images.
"""

from .dataset import MANIFEST, DatasetWriter, read_pairs
from .filters import FILTER_MODES, Verdict, available_modes, make_filter
from .pairs import PAIRINGS, pair_indices
from .pipeline import CurationConfig, CurationReport, SheetSource, curate, curate_folder, folder_sources, split_sheet
from .sheets import SheetInfo, SheetPlan, parse_characters, parse_poses, plan_sheets, read_sheet_info, write_sidecar

__all__ = [
    "MANIFEST", "DatasetWriter", "read_pairs", "FILTER_MODES", "Verdict", "available_modes", "make_filter", "PAIRINGS",
    "pair_indices", "CurationConfig", "CurationReport", "SheetSource", "curate", "curate_folder", "folder_sources",
    "split_sheet", "SheetInfo", "SheetPlan", "parse_characters", "parse_poses", "plan_sheets", "read_sheet_info",
    "write_sidecar",
]
