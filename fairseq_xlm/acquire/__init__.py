"""The paper's corpora, downloaded (or taken from local files) and extracted to plain text.

Entry point: ``python -m fairseq_xlm.cli.get_data {wiki,para,nmt,xnli} ... --out OUT``. Output layout (the
contract with the preparation stages; plain UTF-8, one paragraph or sentence a line, no empty lines, parallel
files line-aligned, pairs named with l1 < l2 alphabetically):

    OUT/wiki/{lang}.txt                       Wikipedia, as get-data-wiki.sh keeps WikiExtractor's text
    OUT/para/{corpus}.{l1}-{l2}.{lang}        get-data-para.sh's corpora (MultiUN, EUbookshop, IITB, ...)
    OUT/newscrawl/{lang}.txt                  WMT News Crawl (the years of get-data-nmt.sh), year order
    OUT/wmt16/{corpus}.en-ro.{lang}           WMT'16 en-ro parallel (europarl-v8, SETIMES2)
    OUT/newstest/{set}.{l1}-{l2}.{lang}       dev/test sets from SGML (newstest2014.en-fr.fr, ...)
    OUT/xnli/                                 as ``prepare_xnli extract`` writes ({split}.{lang}.input0, ...)
    OUT/downloads/                            the archives as fetched, ``ledger.json`` (URL, size, sha256),
                                              ``{archive}.d/`` members unpacked from tar/zip archives

Each output is written as ``{path}.tmp`` and renamed when complete, and skipped when it exists, so a rerun
after a kill resumes and ends with the same bytes. Modules: ``download`` (resume, checksums, ledger,
``--from``, mirrors), ``sources`` (the catalogue), ``archives``, ``textfiles`` (atomic, clean lines), and one
module per family: ``wiki``, ``para``, ``wmt``, ``xnli``.
"""
