"""The training lifecycle around the loop: preemption handling (more to come: train_and_evaluate, early stopping)."""
