"""``charis``: score pairs from the command line.

    charis pair REF.png GEN.png --prompt "the fox surfing" [--json out.json]
    charis batch pairs.jsonl|FOLDER --out results.jsonl [--html report.html] [--csv results.csv]
    charis report results.jsonl --html report.html [--csv results.csv]

Models and the VLM come from ``--config charis.toml`` and/or flags (flags win). The VLM API key is
only ever read from the environment variable named by ``--vlm-key-env`` (default OPENAI_API_KEY).
``batch`` is resumable (items already in --out are skipped, failed ones retried) and runs on several
GPUs with ``accelerate launch --multi_gpu --num_processes N -m instruct_identity.charis.cli batch ...
--device auto`` (or on several CPU processes with ``torchrun --nproc_per_node N -m ...``): accelerate's
``PartialState`` splits the items across processes, each writes its own part file, and the main
process merges them into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("charis")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="charis", description="CHARIS: five-axis evaluation of reference-conditioned "
                                "character generation (identity, prompt, colour, quality, diversity).")
    sub = p.add_subparsers(dest="command", required=True)

    def models(sp):
        g = sp.add_argument_group("evaluator (overrides --config)")
        g.add_argument("--config", help="TOML or JSON config file")
        g.add_argument("--mode", choices=("benchmark", "filter"))
        g.add_argument("--axes", help="comma-separated axes to compute "
                                      "(default: identity,prompt,color,quality,diversity)")
        g.add_argument("--dreambench", action="store_true", default=None,
                       help="also DreamBench++-style CP/PF (+ debiased)")
        g.add_argument("--device", help="cpu (default), cuda, or auto (batch: each accelerate process's own device)")
        g.add_argument("--cache", dest="cache_dir", help="folder for the VLM answer cache")
        g.add_argument("--clip", help="open_clip model folder or weights file (CLIP score)")
        g.add_argument("--clip-arch", help="open_clip architecture of --clip when its file name does not say")
        g.add_argument("--quality", choices=("open_clip", "pyiqa", "none"), help="CLIP-IQA backend")
        g.add_argument("--quality-model", help="CLIP for CLIP-IQA (default: --clip); pyiqa: a TorchScript RN50")
        g.add_argument("--segmenter", choices=("cluster", "grounded-sam"))
        g.add_argument("--grounding-dino", help="GroundingDINO model folder (transformers)")
        g.add_argument("--sam", help="SAM model folder (transformers)")
        g.add_argument("--vlm", choices=("openai", "transformers", "none"), help="VLM backend")
        g.add_argument("--vlm-url", help="OpenAI-compatible base URL, e.g. http://localhost:11434/v1")
        g.add_argument("--vlm-model", help="model name on that server")
        g.add_argument("--vlm-key-env", help="NAME of the environment variable holding the API key")
        g.add_argument("--vlm-path", help="local transformers VLM folder")
        g.add_argument("--vlm-concurrency", type=int)
        g.add_argument("--vlm-timeout", type=float)
        g.add_argument("--vlm-retries", type=int)
        g.add_argument("-v", "--verbose", action="store_true")

    sp = sub.add_parser("pair", help="score one pair")
    sp.add_argument("reference")
    sp.add_argument("generated")
    sp.add_argument("--prompt", default="")
    sp.add_argument("--json", help="also write the result here")
    models(sp)

    sb = sub.add_parser("batch", help="score a JSONL manifest or a folder (resumable)")
    sb.add_argument("input", help="manifest .jsonl, or a folder with reference/ and generated/")
    sb.add_argument("--out", required=True, help="results JSONL (appended; existing items are skipped)")
    sb.add_argument("--html", help="write the HTML report here")
    sb.add_argument("--csv", help="write a CSV here")
    sb.add_argument("--workers", type=int, default=1, help="items in flight at once (helps with remote VLMs)")
    sb.add_argument("--no-resume", action="store_true", help="score everything again")
    models(sb)

    sr = sub.add_parser("report", help="HTML/CSV from a results file")
    sr.add_argument("results")
    sr.add_argument("--html")
    sr.add_argument("--csv")
    sr.add_argument("--title", default="CHARIS report")
    sr.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args):
    from .config import load_config

    over = {
        "mode": args.mode, "device": args.device, "cache_dir": args.cache_dir,
        "axes": [a.strip() for a in args.axes.split(",") if a.strip()] if args.axes else None,
        "dreambench": args.dreambench,
        "clip": {"path": args.clip, "arch": args.clip_arch},
        "quality": {"backend": args.quality, "path": args.quality_model},
        "color": {"segmenter": args.segmenter, "grounding_dino": args.grounding_dino, "sam": args.sam},
        "vlm": {"backend": args.vlm, "base_url": args.vlm_url, "model": args.vlm_model, "api_key_env": args.vlm_key_env,
                "path": args.vlm_path, "concurrency": args.vlm_concurrency, "timeout": args.vlm_timeout,
                "max_retries": args.vlm_retries},
    }
    if over["vlm"]["backend"] is None and (args.vlm_url or args.vlm_model):
        over["vlm"]["backend"] = "openai"
    if over["vlm"]["backend"] is None and args.vlm_path:
        over["vlm"]["backend"] = "transformers"
    return load_config(args.config, over)


def _evaluator(args):
    from .evaluator import Evaluator

    config = config_from_args(args)
    if config.device == "auto":
        import torch

        config.device = "cuda" if torch.cuda.is_available() else "cpu"
    ev = Evaluator(config)
    ev.judge  # noqa: B018 - build the VLM client now, so a bad setting fails before any scoring
    return ev


def _summary(result) -> str:
    def f(v):
        return "missing" if v is None else f"{v:.3f}"

    lines = [f"{result.id}: CHARIS {f(result.composite.value if result.composite else None)}"
             + (f" over {', '.join(result.composite.axes_used)}" if result.composite else "")]
    for name, a in result.axes.items():
        lines.append(f"  {name:<24} {f(a.value)}" + (f"  ({a.missing})" if a.missing else ""))
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)


def cmd_pair(args) -> int:
    ev = _evaluator(args)
    result = ev.score_pair(args.reference, args.generated, args.prompt)
    print(_summary(result))
    if args.json:
        from .batch import write_atomic

        write_atomic(Path(args.json), json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return 0 if result.ok else 1


def cmd_batch(args) -> int:
    from tqdm import tqdm

    from .batch import (append_result, done_ids, merge_parts, part_path, read_items, read_results, repair, split)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = config_from_args(args)
    rank, world, state = 0, 1, None
    try:
        from accelerate import PartialState

        # "cpu": processes talk over gloo (start them with torchrun); otherwise accelerate's device per process
        state = PartialState(cpu=config.device == "cpu")
        rank, world = state.process_index, state.num_processes
        if config.device in ("auto", "cuda") or (world > 1 and config.device != "cpu"):
            config.device = str(state.device)
    except Exception as e:  # noqa: BLE001 - accelerate missing or not launched: one process
        log.debug("accelerate not used: %s", e)
        if config.device == "auto":
            config.device = "cpu"
    if rank == 0:
        merge_parts(out)  # leftovers of an interrupted multi-process run
        repair(out)
        if args.no_resume:
            out.unlink(missing_ok=True)
    if state is not None and world > 1:
        state.wait_for_everyone()

    items = read_items(args.input)
    done = set() if args.no_resume else done_ids(out)
    todo = [it for it in items if it.id not in done]
    mine = split(todo, rank, world)
    target = out if world == 1 else part_path(out, rank)
    if rank == 0:
        log.info("%d items, %d already scored, %d to score on %d process(es)", len(items), len(items) - len(todo),
                 len(todo), world)
    from .evaluator import Evaluator

    ev = Evaluator(config)
    ev.judge  # noqa: B018 - a bad VLM setting fails here, before any scoring
    failed = []
    with tqdm(total=len(mine), desc=f"CHARIS[{rank}]" if world > 1 else "CHARIS", unit="pair",
              disable=None, file=sys.stderr) as bar:
        for r in ev.score_batch(mine, workers=max(1, args.workers)):
            append_result(target, r)
            if not r.ok:
                failed.append(r)
            bar.update(1)
    if state is not None and world > 1:
        state.wait_for_everyone()
    if rank != 0:
        return 0
    if world > 1:
        merge_parts(out)
    results = read_results(out)
    wanted = {it.id for it in items}
    results = [r for r in results if r.id in wanted]
    failed = [r for r in results if not r.ok]
    _write_outputs(results, args.html, args.csv, "CHARIS report")
    scored = [r for r in results if r.ok and r.composite and r.composite.value is not None]
    mean = sum(r.composite.value for r in scored) / len(scored) if scored else None
    print(f"{len(results)} results in {out}; mean CHARIS "
          f"{'n/a' if mean is None else f'{mean:.4f}'} over {len(scored)} scored")
    if failed:
        print(f"{len(failed)} item(s) failed and were skipped:")
        for r in failed:
            print(f"  {r.id}: {r.error}")
    return 0


def _write_outputs(results, html_path, csv_path, title) -> None:
    from .batch import to_csv, write_atomic
    from .report import render

    if html_path:
        write_atomic(Path(html_path), render(results, title))
        print(f"report: {html_path}")
    if csv_path:
        write_atomic(Path(csv_path), to_csv(results))
        print(f"csv: {csv_path}")


def cmd_report(args) -> int:
    from .batch import read_results

    results = read_results(Path(args.results))
    if not results:
        print(f"{args.results}: no results", file=sys.stderr)
        return 1
    if not (args.html or args.csv):
        print("nothing to do: give --html and/or --csv", file=sys.stderr)
        return 2
    _write_outputs(results, args.html, args.csv, args.title)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"pair": cmd_pair, "batch": cmd_batch, "report": cmd_report}[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        print(f"charis: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
