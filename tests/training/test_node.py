"""The training node: registered with the pack, progress and Cancel wired to the trainer's steps."""

import pytest

pytestmark = pytest.mark.usefixtures("comfy")


def test_node_is_registered_and_refuses_an_empty_config():
    from instruct_identity.core.errors import InputError
    from instruct_identity.nodes import node_classes
    from instruct_identity.nodes.training import InstructIdentityTrainLoRA, run_training

    assert InstructIdentityTrainLoRA in node_classes()
    schema = InstructIdentityTrainLoRA.define_schema()
    assert schema.node_id == "InstructIdentityTrainLoRA" and schema.category.startswith("Instruct Identity")
    with pytest.raises(InputError, match="config"):
        run_training("  ", True, 0)


def test_node_reports_progress_and_stops_on_cancel(tmp_path, pairs, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils
    from instruct_identity.nodes.training import run_training
    from instruct_identity.training import trainer
    from instruct_identity.training.trainer import StepInfo

    import os

    # the node reads and writes only inside ComfyUI's folders unless the server's owner lists more
    monkeypatch.setenv("II_TRAIN_ALLOWED_DIRS", os.pathsep.join([str(tmp_path), str(pairs.parent)]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'dataset_config = "{pairs}"\noutput_dir = "{tmp_path / "out"}"\nmax_train_steps = 50\n')
    seen, updates = [], []
    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", lambda self, v, total=None, preview=None: updates.append((v, total)))

    def fake_train(c, resume=None, on_step=None, **kw):
        seen.append((c.max_train_steps, resume))
        for step in (1, 2, 3):
            if step == 3:
                mm.interrupt_current_processing(True)
            on_step(StepInfo(step, 1.0, 1e-4, None))

    monkeypatch.setattr(trainer, "train", fake_train)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_training(str(cfg), True, 7)
    finally:
        mm.interrupt_current_processing(False)
    assert seen == [(7, True)] and updates == [(1, 7), (2, 7), (3, 7)]
