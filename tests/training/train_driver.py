"""Runs one tiny training in this process (used by the two-process ``accelerate launch`` test).

    python train_driver.py CONFIG_JSON     (config keys of the trainer; tiny FLUX + synthetic encoders)
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ii_harness

ii_harness.setup_comfy()

from instruct_identity.training.config import from_dict
from instruct_identity.training.model import Components
from instruct_identity.engine.synthetic import SyntheticTextEncoder, SyntheticVae
from instruct_identity.training.trainer import train


def main() -> None:
    cfg = from_dict(json.loads(Path(sys.argv[1]).read_text()))
    result = train(cfg, Components(ii_harness.tiny_flux(), SyntheticVae(), SyntheticTextEncoder(), None, "tiny"))
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        Path(cfg.output_dir, "run.json").write_text(json.dumps({"losses": result.losses, "processes": state.num_processes,
                                                                 "distributed_type": str(state.distributed_type),
                                                                 "backend": state.backend}))


if __name__ == "__main__":
    main()
