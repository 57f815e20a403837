"""The training lifecycle around the loops: train_and_evaluate and its specs, early
stopping, the continuous evaluator, what train/evaluate record, preemption handling."""
