"""Feature columns (tf.feature_column's names and arguments), split at the host/device line.

  import jestimator.feature_column as fc

  island = fc.categorical_column_with_vocabulary_list('island', ['Biscoe', 'Dream'])
  columns = [fc.numeric_column('bill_length_mm'), fc.embedding_column(island, 2)]
  est = je.Estimator(model_fn, input_transforms=[fc.FeatureTransform(columns)])

  def model_fn(features, labels, mode):
    net = fc.DenseFeatures(columns)(features)      # [batch, 3]
    ...

Host half (`FeatureTransform`, `transform_features`): TF ops in the input
pipeline turn strings, ids and numbers into dense numeric arrays with tf's
exact ids. Device half (`DenseFeatures`, `LinearModel`): Flax modules that
read them. `base` documents the arrays in between.
"""

from jestimator.feature_column.base import (CategoricalColumn, DenseColumn, FeatureColumn,
                                            ids_key, value_key, weights_key)
from jestimator.feature_column.categorical import (categorical_column_with_hash_bucket,
                                                   categorical_column_with_identity,
                                                   categorical_column_with_vocabulary_file,
                                                   categorical_column_with_vocabulary_list)
from jestimator.feature_column.crossed import crossed_column
from jestimator.feature_column.dense_features import DenseFeatures, layout
from jestimator.feature_column.embedding import embedding_column, shared_embeddings
from jestimator.feature_column.indicator import indicator_column
from jestimator.feature_column.linear_model import LinearModel
from jestimator.feature_column.numeric import bucketized_column, numeric_column
from jestimator.feature_column.parse_spec import make_parse_example_spec
from jestimator.feature_column.transform import FeatureTransform, transform_features
from jestimator.feature_column.weighted import weighted_categorical_column

__all__ = [
    'CategoricalColumn', 'DenseColumn', 'DenseFeatures', 'FeatureColumn', 'FeatureTransform',
    'LinearModel', 'bucketized_column', 'categorical_column_with_hash_bucket',
    'categorical_column_with_identity', 'categorical_column_with_vocabulary_file',
    'categorical_column_with_vocabulary_list', 'crossed_column', 'embedding_column',
    'ids_key', 'indicator_column', 'layout', 'make_parse_example_spec', 'numeric_column',
    'shared_embeddings', 'transform_features', 'value_key', 'weighted_categorical_column',
    'weights_key',
]
