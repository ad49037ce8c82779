"""Do the MT models of claims (b)/(c) start from the pretrained weights? Builds the model exactly as
fairseq_cli.train does for replicate.sh's mt_job (same flags through fairseq's parser, task.build_model, the
Trainer and checkpoint_utils.load_checkpoint with an empty save dir), then compares every tensor with the
pretraining checkpoint. Usage: python bench/replication/mt_init_check.py OUT PRETRAINED_CKPT [--pretrained-xlm-init encoder]"""
import os
import sys
import tempfile

import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

out, ckpt = sys.argv[1], sys.argv[2]
user_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fairseq_xlm")
save = tempfile.mkdtemp()
argv = [out, "--user-dir", user_dir, "--task", "unsupervised_mt", "--langs", "en,es,ny",
        "--ae-steps", "", "--bt-steps", "", "--mt-steps", "en-es,es-en", "--arch", "xlm_mt_tiny",
        "--pretrained-xlm-checkpoint", ckpt, "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam",
        "--lr", "0.002", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--max-tokens", "1500",
        "--max-update", "800", "--save-dir", save, "--cpu", "--seed", "1", "--num-workers", "0", *sys.argv[3:]]
parser = options.get_training_parser()
cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
task = tasks.setup_task(cfg.task)
torch.manual_seed(1)
model = task.build_model(cfg.model)
criterion = task.build_criterion(cfg.criterion)
trainer = Trainer(cfg, task, model, criterion)
checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)  # what train.py does before the first update
mt = {k: v for k, v in trainer.model.state_dict().items()}
pre = checkpoint_utils.load_checkpoint_to_cpu(ckpt)["model"]
pre = {k[len("encoder."):]: v for k, v in pre.items() if k.startswith("encoder.")}
report = {"encoder": [0, 0, []], "decoder": [0, 0, []]}
for half, prefix in (("encoder", "encoder."), ("decoder", "decoder.stack.")):
    for k, v in pre.items():
        key = prefix + k
        if key not in mt:
            report[half][2].append(f"{k} (not in the MT {half})")
            continue
        same = torch.equal(mt[key], v)
        report[half][0 if same else 1] += 1
        if not same:
            report[half][2].append(k)
fresh = [k for k in mt if not any(k == p + q for p in ("encoder.", "decoder.stack.") for q in pre)]
for half, (same, diff, names) in report.items():
    print(f"{half}: {same} tensors equal to the checkpoint, {diff} differ; not copied: {names}")
print(f"MT tensors not in the checkpoint (fresh): {len(fresh)}: {fresh}")
