"""An MT starting checkpoint with the encoder of one pretraining checkpoint and the decoder of another
(cross-attention fresh), for --finetune-from-model. Built with the project's own loader
(XlmMtModel.load_pretrained_xlm) through fairseq's train path. Usage: python bench/replication/compose_mt_init.py OUT ENC_CKPT DEC_CKPT SEED DEST
(OUT: the study's data-bin; DEST: the checkpoint to write)"""
import os
import sys

import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

data, enc, dec, seed, out = sys.argv[1:6]
user_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fairseq_xlm")
argv = [data, "--user-dir", user_dir, "--task", "unsupervised_mt",
        "--langs", "en,es,ny", "--ae-steps", "", "--bt-steps", "", "--mt-steps", "en-es,es-en", "--arch", "xlm_mt_tiny",
        "--pretrained-xlm-checkpoint", enc, "--pretrained-xlm-init", "encoder",
        "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "0.002",
        "--lr-scheduler", "inverse_sqrt", "--max-tokens", "1500", "--cpu", "--seed", seed, "--save-dir", os.path.dirname(os.path.abspath(out))]
cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
task = tasks.setup_task(cfg.task)
torch.manual_seed(int(seed))
model = task.build_model(cfg.model)
model.load_pretrained_xlm(dec, "decoder")
# the fields fairseq's load_checkpoint reads (as tests/test_model.py's save_fairseq_checkpoint); reset at load
torch.save({"model": model.state_dict(), "cfg": cfg, "args": None, "extra_state": {},
            "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                                   "lr_scheduler_state": {}, "num_updates": 0}],
            "last_optimizer_state": None}, out)
state = checkpoint_utils.load_checkpoint_to_cpu(out)["model"]
e = checkpoint_utils.load_checkpoint_to_cpu(enc)["model"]
d = checkpoint_utils.load_checkpoint_to_cpu(dec)["model"]
assert all(torch.equal(state["encoder." + k[8:]], v) for k, v in e.items() if k != "encoder.output_bias")
assert all(torch.equal(state["decoder.stack." + k[8:]], v) for k, v in d.items())
print("composed", out)
