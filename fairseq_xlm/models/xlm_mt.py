"""XLM encoder-decoder for machine translation (fairseq model ``xlm_mt``).

Both halves are XLM stacks with language embeddings; each decoder layer is self-attention, LayerNorm,
cross-attention, LayerNorm, FFN, LayerNorm (the authors' layout). Either half, or both, can be
initialised from one pretrained ``xlm_transformer`` checkpoint (the authors' ``--reload_model
'mlm.pth,mlm.pth'``); cross-attention is then freshly initialised.

The decoder is told the target language through ``tgt_langs`` (B,): the encoder carries it in its output
so that fairseq's SequenceGenerator, which only passes ``net_input`` to the encoder, decodes into the
requested language. Decoding starts with ``</s>`` as in both fairseq and the authors' code.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from fairseq import checkpoint_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.models import FairseqEncoderDecoderModel, FairseqIncrementalDecoder, register_model
from omegaconf import OmegaConf, open_dict
from torch import Tensor

from ..errors import ConfigError, MissingFileError
from .modules import attention_mask
from .xlm_transformer import (
    XlmConfig,
    XlmEncoder,
    _register_presets,
    check_vocab_and_langs,
    resolve_n_langs,
)

logger = logging.getLogger(__name__)


@dataclass
class XlmMtConfig(XlmConfig):
    """XlmConfig plus the decoder depth, embedding sharing and initialisation from a pretrained XLM."""

    decoder_layers: int = field(default=0, metadata={"help": "decoder layers; 0 = same as --encoder-layers"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one token embedding (and output matrix) for encoder and decoder"}
    )
    pretrained_xlm_checkpoint: Optional[str] = field(
        default=None,
        metadata={"help": "xlm_transformer checkpoint to initialise from (the authors' --reload_model)"},
    )
    pretrained_xlm_init: ChoiceEnum(["both", "encoder", "decoder"]) = field(
        default="both", metadata={"help": "which half to initialise from --pretrained-xlm-checkpoint"}
    )


class XlmMtEncoder(XlmEncoder):
    """XLM encoder whose output is the dict fairseq's generator expects (batch-first states)."""

    def forward(self, src_tokens, src_lengths=None, src_langs=None, tgt_langs=None, **unused):
        x, extra = self.extract_features(src_tokens, langs=src_langs)
        return {
            "encoder_out": [x],
            # no mask when the batch has no padding (known for free on the CPU; see XlmEncoder.embed)
            "encoder_padding_mask": [] if extra["padding_mask"] is None else [extra["padding_mask"]],
            "tgt_langs": [] if tgt_langs is None else [tgt_langs],
            "src_tokens": [src_tokens],
        }

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        return {key: [t.index_select(0, new_order) for t in val] for key, val in encoder_out.items()}


class XlmDecoder(FairseqIncrementalDecoder):
    """XLM stack with cross-attention; incremental decoding caches self-attention keys and encoder K/V."""

    def __init__(self, cfg, dictionary, n_langs: int, embed_tokens=None, shared: Optional[dict] = None):
        super().__init__(dictionary)
        # Reuse the encoder's modules; the decoder differs only in cross-attention and incremental state.
        self.stack = XlmEncoder(
            cfg, dictionary, n_langs, cross_attention=True,
            num_layers=cfg.decoder_layers or cfg.encoder_layers, embed_tokens=embed_tokens,
            memory_flag="--mem-dec-positions", shared=shared,
        )
        self.padding_idx = dictionary.pad()

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state=None,
        features_only: bool = False,
        tgt_langs: Optional[Tensor] = None,
        **unused,
    ):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state, tgt_langs)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None, tgt_langs=None):
        stack = self.stack
        if tgt_langs is None and encoder_out is not None and len(encoder_out["tgt_langs"]) > 0:
            tgt_langs = encoder_out["tgt_langs"][0]
        tokens, offset = prev_output_tokens, 0
        if incremental_state is not None:
            # Only the newest token is fed; its position is its index in the hypothesis.
            tokens, offset = prev_output_tokens[:, -1:], prev_output_tokens.size(1) - 1
        x, pad, keep = stack.embed(tokens, None, tgt_langs, offset)
        device = tokens.device
        enc, enc_mask = None, None
        if encoder_out is not None:
            enc = encoder_out["encoder_out"][0]
            if len(encoder_out["encoder_padding_mask"]) > 0:
                enc_mask = attention_mask(encoder_out["encoder_padding_mask"][0], False, 1, enc.size(1), device)
        causal = incremental_state is None
        t = tokens.size(1)
        self_mask = attention_mask(pad, causal, t, t, device) if incremental_state is None else None
        for layer in stack.layers:
            x = layer(x, self_mask, keep, causal=causal, encoder_out=enc, encoder_mask=enc_mask,
                      incremental_state=incremental_state)
        return x, {"attn": [None], "inner_states": [x]}

    def output_layer(self, features, **kwargs):
        return self.stack.output_layer(features)

    def max_positions(self):
        return self.stack.max_positions()


@register_model("xlm_mt", dataclass=XlmMtConfig)
class XlmMtModel(FairseqEncoderDecoderModel):
    """XLM encoder-decoder; ``build_model`` optionally loads a pretrained XLM into both halves."""

    def __init__(self, cfg, encoder, decoder):
        super().__init__(encoder, decoder)
        self.cfg = cfg

    @classmethod
    def build_model(cls, cfg, task):
        n_langs = resolve_n_langs(cfg, task)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if getattr(cfg, "use_memory", False) and not (cfg.mem_enc_positions or cfg.mem_dec_positions):
            raise ValueError("--use-memory: name the layers with --mem-enc-positions and/or --mem-dec-positions")
        memories = {}  # what encoder and decoder memories share (--mem-share-values)
        encoder = XlmMtEncoder(cfg, src_dict, n_langs, with_output_layer=False, shared=memories)
        shared = None
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ConfigError("--share-all-embeddings needs one joined source/target dictionary")
            shared = encoder.embed_tokens
        decoder = XlmDecoder(cfg, tgt_dict, n_langs, embed_tokens=shared, shared=memories)
        model = cls(cfg, encoder, decoder)
        if getattr(cfg, "pretrained_xlm_checkpoint", None):
            model.load_pretrained_xlm(cfg.pretrained_xlm_checkpoint, cfg.pretrained_xlm_init)
            # The weights now live in this model's checkpoints; forget the path so that
            # fairseq-generate on another machine does not look for the pretraining file.
            if OmegaConf.is_config(cfg):
                with open_dict(cfg):
                    cfg.pretrained_xlm_checkpoint = None
            else:
                cfg.pretrained_xlm_checkpoint = None
        return model

    def forward(self, src_tokens, src_lengths, prev_output_tokens, src_langs=None, tgt_langs=None, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths, src_langs=src_langs, tgt_langs=tgt_langs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out, **kwargs)

    def load_pretrained_xlm(self, path: str, which: str = "both") -> None:
        """Copy an xlm_transformer checkpoint into the encoder and/or decoder; log what stays fresh."""
        if not os.path.isfile(path):
            raise MissingFileError(f"--pretrained-xlm-checkpoint {path}: no such file")
        state = checkpoint_utils.load_checkpoint_to_cpu(path)["model"]
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        check_vocab_and_langs(enc_state, "", len(self.encoder.dictionary), self.encoder.n_langs, where=path)
        targets = {"both": ["encoder", "decoder"], "encoder": ["encoder"], "decoder": ["decoder"]}[which]
        if "encoder" in targets:
            src = {k: v for k, v in enc_state.items() if k != "output_bias"}
            missing, unexpected = self.encoder.load_state_dict(src, strict=False)
            if missing or unexpected:
                raise ConfigError(f"{path}: encoder does not fit (missing {missing}, unexpected {unexpected})")
            logger.info("initialised the encoder from %s", path)
        if "decoder" in targets:
            missing, unexpected = self.decoder.stack.load_state_dict(enc_state, strict=False)
            fresh = [k for k in missing if ".encoder_attn" not in k]
            if fresh or unexpected:
                raise ConfigError(f"{path}: decoder does not fit (missing {fresh}, unexpected {unexpected})")
            logger.info(
                "initialised the decoder from %s; freshly initialised (cross-attention): %d tensors, e.g. %s",
                path, len(missing), ", ".join(missing[:4]),
            )

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_vocab_and_langs(state_dict, "encoder.", len(self.encoder.dictionary), self.encoder.n_langs)
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: Optional[str] = None,
                        data_name_or_path: str = ".", **kwargs):
        """fairseq's generator hub interface of an ``xlm_mt`` checkpoint in ``model_name_or_path``, with
        ``translate(["..."], src, tgt, beam=5)`` on raw text; ``data_name_or_path`` holds the data-bin's dict.txt
        and spm.model (no training data needed)."""
        from .hub_interface import XlmGeneratorHubInterface, load_hub

        # the training steps would make the task look for training data, which translating does not need
        kwargs = {"ae_steps": "", "bt_steps": "", "mt_steps": "", **kwargs}
        x = load_hub(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)
        if not all(isinstance(m, XlmMtModel) for m in x["models"]):
            raise ConfigError(f"{model_name_or_path}: not an xlm_mt checkpoint (a pretraining checkpoint has no "
                             f"decoder: train one with recipes/umt.sh or recipes/supervised_mt.sh; "
                             f"XlmModel.from_pretrained loads encoders)")
        return XlmGeneratorHubInterface(x["args"], x["task"], x["models"])


# xlm_mt_tiny, xlm_mt_mlm_enfr_1024, ...: shaped like (and initialisable from) the encoder preset.
MT_ARCHS = _register_presets("xlm_mt", lambda name: "xlm_mt_" + name[len("xlm_"):])
