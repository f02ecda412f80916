"""Networks of the book: time embeddings and an MLP denoiser for 2D data (Chapter 2), a U-Net
for images and two digit classifiers (Chapters 7-9), a KL-regularised autoencoder (Chapter 11)
and a diffusion transformer (Chapter 12).

Every denoiser follows the protocol ``model(x_t, t, y=None) -> Tensor`` and
declares what it predicts in ``model.prediction`` ("eps", "x0", "v", "score" or
"velocity"); none of them owns a schedule. The autoencoder is not a denoiser: it encodes
digits to latents and decodes them back.
"""

from .autoencoder import Autoencoder, AutoencoderConfig
from .classifier import DigitClassifier, NoisyDigitClassifier
from .dit import DiT, DiTConfig
from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP, NoisyClassifier
from .unet import UNet, UNetConfig

__all__ = ["MLP", "NoisyClassifier", "TimeEmbedding", "sinusoidal_embedding", "UNet", "UNetConfig",
           "DigitClassifier", "NoisyDigitClassifier", "Autoencoder", "AutoencoderConfig", "DiT", "DiTConfig"]
