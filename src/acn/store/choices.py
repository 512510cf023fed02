"""Which checkpoint of a run folder a reader takes (no torch here: the command line reads it).

``best`` is ``checkpoints/best.pt``, the step with the lowest validation total seen in training;
``last`` is ``checkpoints/last.pt``, the latest step, the one training resumes from.
"""

CHECKPOINTS = ("best", "last")
