"""Input: numpy / pandas / TFDS input_fns, `InputContext`, and the host pipeline."""

from jestimator.inputs.input_context import InputContext
from jestimator.inputs.numpy_io import numpy_input_fn
from jestimator.inputs.pandas_io import pandas_input_fn
from jestimator.inputs.tfds_io import tfds_input_fn

__all__ = ['InputContext', 'numpy_input_fn', 'pandas_input_fn', 'tfds_input_fn']
