"""An HF ``tokenizers`` tokenizer that gives fairseq_xlm's ids, for HF model directories written by ``write_hf``.

fairseq_xlm encodes a sentence with sentencepiece, looks every piece up in dict.txt and feeds ``</s> s </s>``
(sentence pairs: ``</s> a </s> b </s>``, as the ``xnli`` task's ``classification_dataset`` and the authors'
XNLI/GLUE ``concat_batches`` build them). The exported tokenizer does the same in
the HF vocabulary order (``vocab.json``: the authors' layout, ``<s> </s> <pad> <unk>`` = 0-3): transformers'
``SpmConverter`` rebuilds the sentencepiece model as a ``tokenizers`` BPE with sentencepiece's own normalizer
(the precompiled character map, whitespace rules, the ``▁`` dummy prefix), and its vocabulary is renumbered
to ours. ``AutoTokenizer.from_pretrained(dir)`` loads it, so ``pipeline("fill-mask", model=dir)`` works.
"""

import json
from typing import Sequence

from .released import AUTHORS_SPECIALS, N_SPECIALS

_SPM_BPE = 2  # sentencepiece's TrainerSpec.ModelType.BPE
_SPM_NORMAL = 1  # sentencepiece's SentencePiece.Type.NORMAL


def _read_spm(path: str):
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    with open(path, "rb") as f:
        data = f.read()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError, whose module path differs between versions
        raise ValueError(f"{path}: not a sentencepiece model ({err})") from None
    if not proto.pieces:
        raise ValueError(f"{path}: not a sentencepiece model (no pieces)")
    return proto


def build_tokenizer(spm_path: str, words: Sequence[str], mask_index: int, max_length: int = 512):
    """A ``PreTrainedTokenizerFast`` for sentencepiece model ``spm_path`` whose ids index ``words`` (the HF
    vocabulary order); ``words[mask_index]`` is the mask token. Refuses a model whose pieces are not all in
    ``words`` (their ids would differ from fairseq_xlm's, which maps such pieces to ``<unk>``)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    if not hasattr(SpmConverter, "build_tokenizer_from_spm_proto"):
        import transformers

        raise ValueError(f"the HF tokenizer export needs transformers >= 5 (found {transformers.__version__})")
    if list(words[:N_SPECIALS]) != AUTHORS_SPECIALS:
        raise ValueError(f"the vocabulary starts with {list(words[:N_SPECIALS])}, not {AUTHORS_SPECIALS}")
    proto = _read_spm(spm_path)
    if proto.trainer_spec.model_type != _SPM_BPE:
        raise ValueError(f"{spm_path}: a sentencepiece model of type {proto.trainer_spec.model_type}, not BPE "
                         f"(fairseq_xlm.cli.prepare trains BPE)")
    if proto.trainer_spec.byte_fallback:
        raise ValueError(f"{spm_path}: byte fallback is not used by fairseq_xlm's dictionaries")
    ids = {w: i for i, w in enumerate(words)}
    missing = [p.piece for p in proto.pieces if p.type == _SPM_NORMAL and p.piece not in ids]
    if missing:
        raise ValueError(f"{spm_path}: {len(missing)} pieces are not in the model's vocabulary (first: "
                         f"{missing[:5]}); is this the spm.model of the checkpoint's data-bin?")
    # Built with sentencepiece's ids (the converter ranks merges by piece score), then renumbered: merges name
    # pieces, not ids, so only the vocabulary changes.
    spm_vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    # legacy: a "▁" starts the text after every special token too, as when each part is encoded on its own
    spm_tok = SpmConverter.build_tokenizer_from_spm_proto(proto, spm_vocab, legacy=True)
    data = json.loads(spm_tok.to_str())
    data["model"]["vocab"] = ids
    data["model"]["unk_token"] = words[3]
    tok = Tokenizer.from_str(json.dumps(data))
    eos = words[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{eos} $A {eos}", pair=f"{eos} $A {eos} $B {eos}", special_tokens=[(eos, 1)])
    specials = dict(bos_token=words[0], eos_token=eos, pad_token=words[2], unk_token=words[3],
                    cls_token=eos, sep_token=eos, mask_token=words[mask_index])
    # clean_up_tokenization_spaces: decode as HF's XLMTokenizer does (" ." -> "."), so that the fill-mask
    # pipeline's sequences read "the file." and not "the file ." (a "▁" starts the text after <mask>: legacy).
    # transformers 5 skips the clean-up for BPE tokenizers unless told (the long flag below).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, padding_side="right", clean_up_tokenization_spaces=True,
        clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True, **specials)
