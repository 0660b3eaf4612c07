"""``ii-train --config config.toml [--resume [STATE]] [--set key=value ...]``

One process: ``ii-train --config my.toml``. Several GPUs or nodes: ``accelerate launch
--num_processes 8 -m instruct_identity.training.cli --config my.toml`` (see docs/trainer.md).

Exit status: 0 done, 2 bad input (config, dataset, an output folder holding another run's results),
3 training diverged (non-finite loss; nothing non-finite is saved), 1 a file system error, 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..core.errors import InputError
from ..core.version import package_version


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ii-train", description="Train an Instruct Identity LoRA for FLUX (see docs/trainer.md).")
    p.add_argument("--config", required=True, help="trainer TOML (kohya's argument names)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="STATE",
                   help="continue from a saved state folder, or (no value) from the newest one in output_dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value read as TOML), e.g. --set max_train_steps=200")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--version", action="version", version=f"ii-train {package_version()}")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("ii-train")
    try:
        from .config import load_config, parse_override

        cfg = load_config(args.config, dict(parse_override(s) for s in args.set))
        from accelerate import PartialState

        from ..engine.runtime import setup_comfyui, use_cpu

        PartialState(cpu=use_cpu())  # pick this process's device before ComfyUI looks at it

        setup_comfyui(cfg.comfyui_path)
        from .trainer import train

        result = train(cfg, resume=args.resume)
    except InputError as e:
        log.error("%s", e)
        return int(getattr(e, "exit_code", 2))
    except OSError as e:  # a folder that cannot be read or written: say which, no traceback
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted: run again with --resume to continue from the last saved state")
        return 130
    log.info("LoRA: %s", result.lora_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
