"""A multi-objective search whose trials are DVC experiments (``python -m fashion_vae.search``).

``space`` reads search.yaml, ``storage`` opens Optuna's study database, ``experiments``
drives DVC's experiment queue, ``driver`` runs the ask-and-tell loop and ``report`` writes
the Pareto front. Nothing here imports TensorFlow: the trials train in DVC's queue.
"""
