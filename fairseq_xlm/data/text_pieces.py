"""Raw text -> the pieces a data-bin's dict.txt holds, for either tokenization a data-bin can have: the
shared sentencepiece BPE (``spm.model``, what ``prepare`` learns) or the authors' Moses + fastBPE codes
(``authors_bpe/``, for their released checkpoints; see ``authors_bpe``)."""

import os
from typing import List, Sequence, Union

from .authors_bpe import FOLDER, AuthorsBpe

SPM = "spm.model"


class SentencepiecePieces:
    """sentencepiece pieces of raw lines (the language does not matter: one model for all)."""

    def __init__(self, model_file: str, workers: int = 1):
        import sentencepiece as spm

        self.sp, self.workers = spm.SentencePieceProcessor(model_file=model_file), workers
        self.unk = self.sp.id_to_piece(self.sp.unk_id())

    def batch(self, lines: Sequence[str], lang: str) -> List[List[str]]:
        """Pieces of every line (unknown characters become the <unk> piece)."""
        # through ids: out_type=str would keep an unknown character as itself, not as <unk>
        ids = self.sp.encode(list(lines), out_type=int, num_threads=self.workers)
        return [self.sp.id_to_piece(x) for x in ids]

    def unknown(self, pieces: Sequence[str]) -> int:
        """How many of ``pieces`` are <unk>."""
        return sum(p == self.unk for p in pieces)


def piece_encoder(data_dir: str, workers: int = 1) -> Union[SentencepiecePieces, AuthorsBpe]:
    """The tokenization of ``data_dir``: its authors_bpe/ folder if it has one, else its spm.model."""
    if os.path.isdir(os.path.join(data_dir, FOLDER)):
        return AuthorsBpe(os.path.join(data_dir, FOLDER))
    path = os.path.join(data_dir, SPM)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (and no {FOLDER}/); is {data_dir} a data-bin made by "
                                f"fairseq_xlm.cli.prepare?")
    return SentencepiecePieces(path, workers)
