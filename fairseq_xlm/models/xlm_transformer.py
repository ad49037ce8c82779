"""The XLM encoder (CLM / MLM / TLM pretraining and classification) as a fairseq model ``xlm_transformer``.

Architectures: ``xlm_tiny`` (tests) and the authors' released shapes (``xlm_mlm_enfr_1024``, ...).
"""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import ChoiceEnum
from fairseq.models import FairseqEncoder, FairseqEncoderModel, register_model, register_model_architecture
from torch import Tensor, nn

from ..errors import ConfigError
from .memory import build_memories
from .memory_config import MemoryConfig
from .modules import XlmEmbeddings, XlmLayer, attention_mask
from .tied_output import tied_output

logger = logging.getLogger(__name__)


@dataclass
class XlmConfig(MemoryConfig):
    """Hyper-parameters of the XLM Transformer (names follow fairseq's transformer where one exists), after
    the product-key memory options (``MemoryConfig``, ``--use-memory``, ``--mem-*``)."""

    encoder_embed_dim: int = field(default=1024, metadata={"help": "model dimension (the authors' emb_dim)"})
    encoder_layers: int = field(default=6, metadata={"help": "number of Transformer layers"})
    encoder_attention_heads: int = field(default=8, metadata={"help": "number of attention heads"})
    encoder_ffn_embed_dim: int = field(default=4096, metadata={"help": "hidden size of the feed-forward block"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings, residual branches"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_fn: ChoiceEnum(["gelu", "relu"]) = field(
        default="gelu", metadata={"help": "feed-forward activation (the authors' --gelu_activation)"}
    )
    sinusoidal_embeddings: bool = field(
        default=False, metadata={"help": "fixed sinusoidal position embeddings instead of learned ones"}
    )
    no_lang_embeddings: bool = field(
        default=False, metadata={"help": "do not add language embeddings (the authors' --use_lang_emb false)"}
    )
    n_langs: int = field(
        default=0,
        metadata={"help": "number of language embeddings; 0 = the number of languages of the task (--langs)"},
    )
    max_positions: int = field(default=512, metadata={"help": "number of position embeddings"})
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon (the authors use 1e-12)"})


def resolve_n_langs(cfg, task) -> int:
    """Language count from the task (its ``langs``), checked against an explicit ``--n-langs``."""
    task_langs = getattr(task, "langs", None)
    if task_langs is not None and cfg.n_langs and cfg.n_langs != len(task_langs):
        raise ConfigError(
            f"--n-langs {cfg.n_langs} does not match the task's {len(task_langs)} languages "
            f"({','.join(task_langs)}); drop --n-langs or fix --langs"
        )
    n_langs = len(task_langs) if task_langs is not None else cfg.n_langs
    if n_langs < 1:
        raise ConfigError(f"invalid language count {n_langs}: give --langs to the task or --n-langs >= 1")
    return n_langs


class XlmEncoder(FairseqEncoder):
    """Embeddings, post-LayerNorm layers and (optionally) the tied output layer with bias."""

    def __init__(self, cfg, dictionary, n_langs: int, with_output_layer: bool = True, cross_attention=False,
                 num_layers: Optional[int] = None, embed_tokens: Optional[nn.Embedding] = None,
                 memory_flag: str = "--mem-enc-positions", shared: Optional[dict] = None):
        """``memory_flag``: which positions option places this stack's memories (``--mem-dec-positions`` for
        a decoder); ``shared``: one dict per model for the values ``--mem-share-values`` shares."""
        super().__init__(dictionary)
        self.n_langs = n_langs
        self.padding_idx = dictionary.pad()
        self.embeddings = XlmEmbeddings(cfg, dictionary, n_langs, embed_tokens)
        n_layers = num_layers or cfg.encoder_layers
        positions = getattr(cfg, memory_flag[2:].replace("-", "_"), "")
        memories = build_memories(cfg, cfg.encoder_embed_dim, n_layers, positions, memory_flag,
                                  {} if shared is None else shared)
        self.layers = nn.ModuleList(
            [XlmLayer(cfg, cross_attention, memories.get(i)) for i in range(n_layers)]
        )
        self.output_bias = nn.Parameter(torch.zeros(len(dictionary))) if with_output_layer else None

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.embeddings.embed_tokens

    def embed(self, tokens: Tensor, positions: Optional[Tensor], langs: Optional[Tensor], offset: int = 0,
              padded: bool = True):
        """Embedded tokens zeroed at padding, the (B, T) padding mask and the (B, T, 1) keep mask.

        Both masks are built unless the caller knows the batch has no padding (``padded=False``, from the
        collater, on the host): asking the tensor would make the host wait for the device at every forward.
        Without masks, attention can take SDPA's fastest (flash) kernels. On the CPU, reading the tensor costs
        nothing, so a batch without padding drops its masks there whatever the caller says (no masked
        scores, no re-zeroing after every layer; the numbers are the same).
        """
        x = self.embeddings(tokens, positions, langs, offset)
        if not padded:
            return x, None, None
        pad = tokens.eq(self.padding_idx)
        if tokens.device.type == "cpu" and not bool(pad.any()):
            return x, None, None
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return x * keep, pad, keep

    def extract_features(
        self,
        src_tokens: Tensor,
        langs: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
        causal: bool = False,
        return_all_hiddens: bool = False,
        padded: Optional[bool] = None,
        rows: Optional[Tensor] = None,
    ):
        """Final hidden states (B, T, C) and a dict with the padding mask (and every layer's states).

        ``padded=False`` promises a batch without padding (see ``embed``); None = it may have some.
        ``rows`` (flat indices into B * T): the final states at those positions only, (N, C); the last
        layer then runs its per-position work on them alone (see ``XlmLayer.forward``)."""
        x, pad, keep = self.embed(src_tokens, positions, langs, padded=padded is not False)
        t = src_tokens.size(1)
        # no padding: no mask at all (a causal batch then uses SDPA's is_causal)
        mask = None if pad is None else attention_mask(pad, causal, t, t, src_tokens.device)
        states = [x] if return_all_hiddens else []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, keep, causal=causal, rows=rows if i == last else None)
            if return_all_hiddens:
                states.append(x)
        return x, {"padding_mask": pad, "inner_states": states}

    def output_layer(self, features: Tensor, masked_tokens: Optional[Tensor] = None) -> Tensor:
        """Logits over the vocabulary, only at ``masked_tokens`` (bool, B x T) when given: (N, V)."""
        if masked_tokens is not None:
            features = features[masked_tokens]
        return tied_output(features, self.embed_tokens.weight, self.output_bias)

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        langs: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
        causal: bool = False,
        masked_tokens: Optional[Tensor] = None,
        features_only: bool = False,
        return_all_hiddens: bool = False,
        padded: Optional[bool] = None,
        **unused,
    ):
        """(logits or features, extra); see ``extract_features`` and ``output_layer``.

        Logits at ``masked_tokens`` only need the last layer at those positions, so it runs there alone
        (an MLM step saves 85 % of that layer's feed-forward work, exact up to float rounding); the
        positions are read once, with one host sync (data-dependent, as the authors' gather)."""
        if masked_tokens is not None and not features_only and not return_all_hiddens and self.layers:
            rows = masked_tokens.reshape(-1).nonzero().squeeze(1)
            x, extra = self.extract_features(src_tokens, langs, positions, causal, False, padded, rows=rows)
            return self.output_layer(x), extra
        x, extra = self.extract_features(src_tokens, langs, positions, causal, return_all_hiddens, padded)
        if not features_only:
            x = self.output_layer(x, masked_tokens)
        return x, extra

    def max_positions(self) -> int:
        return self.embeddings.max_positions


def check_vocab_and_langs(state_dict, prefix: str, vocab_size: int, n_langs: int, where: str = "checkpoint"):
    """One clear error when a state dict was trained with another vocabulary or language count."""
    tok = state_dict.get(prefix + "embeddings.embed_tokens.weight")
    if tok is not None and tok.size(0) != vocab_size:
        raise ConfigError(
            f"{where} has a vocabulary of {tok.size(0)} rows but the data dictionary has {vocab_size} "
            f"symbols: binarize with the checkpoint's dict.txt (fairseq-preprocess --srcdict)"
        )
    lang = state_dict.get(prefix + "embeddings.embed_langs.weight")
    if lang is not None and lang.size(0) != n_langs:
        raise ConfigError(
            f"{where} has {lang.size(0)} language embeddings but the model is built for {n_langs} "
            f"languages: pass the checkpoint's languages in the same order to --langs"
        )


@register_model("xlm_transformer", dataclass=XlmConfig)
class XlmModel(FairseqEncoderModel):
    """Encoder-only XLM: language model heads for CLM/MLM/TLM; features for classification."""

    def __init__(self, cfg, encoder: XlmEncoder):
        super().__init__(encoder)
        self.cfg = cfg

    @classmethod
    def build_model(cls, cfg, task):
        """Build from a config and a task that has ``source_dictionary`` and ``langs``."""
        if getattr(cfg, "use_memory", False) and not cfg.mem_enc_positions:
            raise ValueError("--use-memory: name the layers with --mem-enc-positions (e.g. '1' or '1+')")
        return cls(cfg, XlmEncoder(cfg, task.source_dictionary, resolve_n_langs(cfg, task)))

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        return self.encoder(src_tokens, src_lengths, **kwargs)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return logits.log_softmax(dim=-1) if log_probs else logits.softmax(dim=-1)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_vocab_and_langs(state_dict, "encoder.", len(self.encoder.dictionary), self.encoder.n_langs)
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: Optional[str] = None,
                        data_name_or_path: str = ".", **kwargs):
        """An ``XlmHubInterface`` (encode, extract_features, embed_sentences, fill_mask) of a checkpoint in
        ``model_name_or_path``; ``data_name_or_path`` holds its data-bin's dict.txt and spm.model."""
        from .hub_interface import XlmHubInterface, load_hub

        x = load_hub(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)
        model = x["models"][0]
        if not isinstance(model, XlmModel):
            raise ConfigError(f"{model_name_or_path}: a {type(model).__name__} checkpoint, not an xlm_transformer "
                             f"one" + ("; use XlmMtModel.from_pretrained" if hasattr(model, "decoder") else ""))
        return XlmHubInterface(x["args"], x["task"], model)


# name: (layers, dim, heads); the authors' released checkpoints (FFN = 4 * dim, GELU).
XLM_PRESETS = {
    "xlm_mlm_enfr_1024": (6, 1024, 8),
    "xlm_mlm_ende_1024": (6, 1024, 8),
    "xlm_mlm_enro_1024": (6, 1024, 8),
    "xlm_clm_enfr_1024": (6, 1024, 8),
    "xlm_mlm_xnli15_1024": (12, 1024, 8),
    "xlm_mlm_tlm_xnli15_1024": (12, 1024, 8),
    "xlm_mlm_17_1280": (16, 1280, 16),
    "xlm_mlm_100_1280": (16, 1280, 16),
    "xlm_mlm_en_2048": (12, 2048, 16),
    "xlm_tiny": (2, 64, 4),
}


def apply_preset(args, layers: int, dim: int, heads: int) -> None:
    """Fill unset hyper-parameters of ``args`` with a preset (explicit flags win, as in fairseq)."""
    args.encoder_layers = getattr(args, "encoder_layers", None) or layers
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", None) or dim
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", None) or heads
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", None) or 4 * args.encoder_embed_dim


def _register_presets(model_name: str, prefix_map, extra=None) -> List[str]:
    names = []
    for preset, shape in XLM_PRESETS.items():
        name = prefix_map(preset)

        def arch(args, shape=shape):
            apply_preset(args, *shape)
            if extra is not None:
                extra(args)

        register_model_architecture(model_name, name)(arch)
        names.append(name)
    return names


ENCODER_ARCHS = _register_presets("xlm_transformer", lambda name: name)
