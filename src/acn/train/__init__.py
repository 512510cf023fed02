"""Training (layer 5): the loop that optimises, validates, logs, checkpoints and resumes exactly
(:mod:`~acn.train.loop`), a model made ready for this process and its ranks
(:mod:`~acn.train.parallel`), and the validation pass (:mod:`~acn.train.validate`)."""
