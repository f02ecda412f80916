"""Networks of the book: time embeddings and an MLP denoiser for 2D data (Chapter 2).

Every network follows the denoiser protocol ``model(x_t, t, y=None) -> Tensor`` and
declares what it predicts in ``model.prediction`` ("eps", "x0", "v", "score" or
"velocity"); none of them owns a schedule.
"""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP, NoisyClassifier

__all__ = ["MLP", "NoisyClassifier", "TimeEmbedding", "sinusoidal_embedding"]
