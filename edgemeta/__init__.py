"""edgemeta: on-device personalisation of speech recognition by meta-learning.

The server side (data, model, meta-learning, training, evaluation) lives in
this package; ``edgemeta.export`` writes bundles and ``edgemeta.runtime`` is
all a device needs. Importing ``edgemeta`` itself loads nothing heavy.
"""

__version__ = "0.1.0"
