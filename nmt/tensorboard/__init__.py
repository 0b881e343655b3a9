"""The Attention dashboard: a TensorBoard plugin (:mod:`nmt.tensorboard.plugin`) reading the
attention summaries that :mod:`nmt.tensorboard.writer` writes (:mod:`nmt.tensorboard.records`
is the format both agree on).

Importing this package, its records and its plugin never imports torch: TensorBoard loads the
plugin at start-up, and the server should not pay for a deep-learning framework.
"""
