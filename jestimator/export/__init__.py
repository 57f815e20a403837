"""Export for serving: TF SavedModel (jax2tf, with the host transforms inside), a
JAX-native artifact, receivers, signature outputs and exporters."""
