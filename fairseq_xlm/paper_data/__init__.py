"""The paper's data as the authors prepare it: their text form (``text_form``), their seeded split
(``seeded_split``), fastBPE learned from scratch (``fastbpe``, ``stl_order``) and the paper's settings
(``experiments``); ``fairseq_xlm.cli.prepare_paper`` chains them into a data-bin."""
