"""What never runs live: datasets, training, evaluation, pre-rendering, seed collection, dream quality checks."""

NUM_THREADS = 2  # torch threads for every offline job: the installation box has 2 cores; more only thrash
