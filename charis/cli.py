"""``charis``: score pairs from the command line (a thin shell over the library).

    charis pair REF.png GEN.png --prompt "the fox surfing" [--json out.json]
    charis batch pairs.jsonl|FOLDER --out results.jsonl [--html report.html] [--csv results.csv]
    charis report results.jsonl --html report.html [--csv results.csv]

Models and the VLM come from ``--config charis.toml`` and/or flags (flags win). The VLM API key is
only ever read from the environment variable named by ``--vlm-key-env`` (default OPENAI_API_KEY).
``batch`` is resumable (items already in --out are skipped, failed ones retried) and runs on several
GPUs with ``accelerate launch --multi_gpu --num_processes N -m instruct_identity.charis.cli batch ...
--device auto`` (or on several CPU processes with ``torchrun --nproc_per_node N -m ...``): see
:func:`instruct_identity.charis.batch.run_batch`.

Results go to stdout (logger ``charis.out``), progress and problems to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..core.errors import InputError

log = logging.getLogger("charis")
out = logging.getLogger("charis.out")  # the command's results, on stdout


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("comfyui-instruct-identity")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="charis", description="CHARIS: five-axis evaluation of reference-conditioned "
                                "character generation (identity, prompt, colour, quality, diversity).")
    p.add_argument("--version", action="version", version=f"charis (comfyui-instruct-identity) {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def models(sp):
        g = sp.add_argument_group("evaluator (overrides --config)")
        g.add_argument("--config", help="TOML or JSON config file")
        g.add_argument("--mode", choices=("benchmark", "filter"))
        g.add_argument("--axes", help="comma-separated axes to compute, and only those "
                                      "(default: identity,prompt,color,quality,diversity)")
        g.add_argument("--allow-partial", action="store_true", default=None,
                       help="when axes are missing, give a composite over the others, labelled 'partial CHARIS: <axes>'")
        g.add_argument("--min-prompt", type=float, help="filter mode: also require prompt adherence >= this")
        g.add_argument("--dreambench", action="store_true", default=None,
                       help="also DreamBench++-style CP/PF (+ debiased)")
        g.add_argument("--device", help="cpu (default), cuda, or auto (batch: each accelerate process's own device)")
        g.add_argument("--threads", type=int, help="torch CPU threads for this process (default: torch's choice; "
                                                    "1 is often fastest for the colour axis on a busy CPU)")
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
        g.add_argument("--vlm-key-env", help="NAME of the environment variable holding the API key (never the key)")
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
        "composite": {"allow_partial": args.allow_partial, "prompt_threshold": args.min_prompt},
    }
    if over["vlm"]["backend"] is None and (args.vlm_url or args.vlm_model):
        over["vlm"]["backend"] = "openai"
    if over["vlm"]["backend"] is None and args.vlm_path:
        over["vlm"]["backend"] = "transformers"
    return load_config(args.config, over)


def _setup(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(max(1, args.threads))  # once, for this process, before any scoring


def _summary(result) -> str:
    def f(v):
        return "missing" if v is None else f"{v:.3f}"

    c = result.composite
    head = f"{result.id}: " + (c.headline() if c else "CHARIS absent: the item was not scored")
    if c and c.value is not None:
        head += f" ({c.mode}; over {', '.join(c.axes_used)})"
    if c and c.passed is not None:
        head += " PASS" if c.passed else " REJECT (" + "; ".join(f"{k} {v}" for k, v in c.failed.items()) + ")"
    lines = [head]
    for name, a in result.axes.items():
        lines.append(f"  {name:<24} {f(a.value)}" + (f"  ({a.missing})" if a.missing else ""))
        if name == "identity" and a.details.get("contradiction"):
            lines.append(f"    note: {a.details['consistency']['note']}")
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)


def cmd_pair(args) -> int:
    from .batch import write_atomic
    from .evaluator import Evaluator

    config = config_from_args(args)
    if config.device == "auto":
        import torch

        config.device = "cuda" if torch.cuda.is_available() else "cpu"
    ev = Evaluator(config)
    ev.judge  # noqa: B018 - build the VLM client now, so a bad setting fails before any scoring
    result = ev.score_pair(args.reference, args.generated, args.prompt)
    out.info("%s", _summary(result))
    if args.json:
        write_atomic(Path(args.json), json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return 0 if result.ok else 1


def cmd_batch(args) -> int:
    from tqdm import tqdm

    from .batch import check_paths, run_batch

    check_paths(args.input, args.out, {"--html": args.html, "--csv": args.csv})
    config = config_from_args(args)
    with tqdm(unit="pair", desc="CHARIS", disable=None, file=sys.stderr) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(1)

        outcome = run_batch(config, args.input, args.out, workers=args.workers, resume=not args.no_resume,
                            progress=progress)
    if outcome.summary is None:  # not the main process
        return 0
    _write_outputs(outcome.results, args.html, args.csv, "CHARIS report")
    out.info("%d results in %s", len(outcome.results), outcome.out)
    out.info("%s", outcome.summary.text())
    if outcome.failed:
        out.info("%d item(s) failed and were skipped:", len(outcome.failed))
        for r in outcome.failed:
            out.info("  %s: %s", r.id, r.error)
    return 0


def _write_outputs(results, html_path, csv_path, title) -> None:
    from .batch import to_csv, write_atomic
    from .report import render

    if html_path:
        write_atomic(Path(html_path), render(results, title))
        out.info("report: %s", html_path)
    if csv_path:
        write_atomic(Path(csv_path), to_csv(results))
        out.info("csv: %s", csv_path)


def cmd_report(args) -> int:
    from .batch import read_results

    results = read_results(Path(args.results))
    if not results:
        raise InputError("results", f"{args.results} holds no results.", "Run `charis batch` first.")
    if not (args.html or args.csv):
        raise InputError("--html/--csv", "nothing to do.", "Give --html and/or --csv.")
    _write_outputs(results, args.html, args.csv, args.title)
    return 0


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    out.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    out.addHandler(handler)
    out.setLevel(logging.INFO)
    out.propagate = False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _logging(getattr(args, "verbose", False))
    try:
        _setup(args)
        return {"pair": cmd_pair, "batch": cmd_batch, "report": cmd_report}[args.command](args)
    except (InputError, FileNotFoundError, KeyError, ImportError, ValueError) as e:
        log.error("charis: %s", str(e).strip("'\""))
        return 2


if __name__ == "__main__":
    sys.exit(main())
