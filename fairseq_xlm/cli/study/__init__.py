"""Studies: arms x seeds as stamped, resumable jobs, their numbers as records, and the reports built from them.

    jobs         a job (a function and its arguments), its log and stamp; a pool over submitit's executors
                 (local processes or SLURM); the settings lock of a study folder
    gather       the numbers of finished jobs as ``claim measure arm seed value`` records: the readers of the
                 files the recipes write (fairseq logs, BLEU and accuracy tables, retrieval JSON), and their
                 collection by claim, measure, arm and seed (``make replicate`` and ``make demo`` both use it)
    report       REPLICATION.md (paired comparisons), the paper's tables (paper | ours | arms), the curves
    replication  ``make replicate``: its settings, data, plan and the jobs of its seven stages
"""
