"""Is a translation about its source? corpus sacreBLEU of the hypotheses against their references and against
the references rolled by one sentence (a control that keeps every n-gram statistic of the text but breaks the
pairing), and the share of distinct hypotheses. Usage: source_dependence.py RUN_DIR..."""
import sys

import sacrebleu

for d in sys.argv[1:]:
    cells = []
    for src, tgt in (("en", "es"), ("es", "en")):
        hyp = open(f"{d}/hyp.test.{src}-{tgt}.beam1.{tgt}").read().splitlines()
        ref = open(f"{d}/ref.test.{src}-{tgt}.{tgt}").read().splitlines()
        true = sacrebleu.corpus_bleu(hyp, [ref]).score
        rolled = sacrebleu.corpus_bleu(hyp, [ref[1:] + ref[:1]]).score
        cells.append(f"{src}-{tgt} bleu {true:.2f} rolled {rolled:.2f} distinct {len(set(hyp))}/{len(hyp)}")
    print(d, " | ".join(cells))
