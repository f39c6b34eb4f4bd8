"""The kit's small image classifier: a CNN for scikit-learn's handwritten digits.

torchvision does not install beside this torch, so the model lives here. The data set is
scikit-learn's `load_digits` (1,797 8x8 grey images, 10 classes), which ships inside the
package: nothing downloads. Training is seeded and takes seconds on a laptop CPU, so every
chapter (quantization, pruning, distillation) can train its own reference model.

Example:
    >>> from deploylab import cnn
    >>> data = cnn.load_digits_split(seed=0)           # train/test tensors, (N, 1, 8, 8)
    >>> model = cnn.DigitsCNN()
    >>> history = cnn.train_cnn(model, data, epochs=15)
    >>> cnn.accuracy(model, data)                      # test accuracy, a fraction: ~0.98
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch  # the module defines a torch model; `import deploylab` alone does not load it

from .errors import DeploylabError

__all__ = ["Digits", "DigitsCNN", "accuracy", "load_digits_split", "predict", "pretrained_cnn",
           "train_cnn"]

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@dataclass
class Digits:
    """The digits data, split once, as float tensors ready for the CNN.

    Args:
        x_train (torch.Tensor): (N_train, 1, 8, 8) float32, pixel values scaled to [0, 1].
        y_train (torch.Tensor): (N_train,) int64 labels 0-9.
        x_test (torch.Tensor): (N_test, 1, 8, 8) float32.
        y_test (torch.Tensor): (N_test,) int64.
        seed (int): the seed of the split.
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    seed: int = 0

    def split(self, name: str):
        """(x, y) of "train" or "test"."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def __repr__(self) -> str:
        return (f"Digits(train={len(self.y_train)}, test={len(self.y_test)}, "
                f"image={tuple(self.x_train.shape[1:])}, seed={self.seed})")


def load_digits_split(seed: int = 0, test_fraction: float = 0.25) -> Digits:
    """scikit-learn's digits, split into train and test sets (stratified, seeded).

    Args:
        seed (int, default 0): seed of the split; the same seed gives the same split.
        test_fraction (float, default 0.25): share of images held out for testing.

    Returns:
        Digits: float32 images in [0, 1] shaped (N, 1, 8, 8) and int64 labels.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixels are 0..16
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                          stratify=y)
    t = torch.from_numpy
    return Digits(t(xtr), t(ytr), t(xte), t(yte), seed)


class DigitsCNN(torch.nn.Module):
    """Three 3x3 convolutions and two linear layers; about 40k parameters.

    Shapes: (B, 1, 8, 8) -> conv 8x8 -> conv + pool 4x4 -> conv + pool 2x2 -> flatten
    (B, 4*c3) -> hidden -> (B, 10) logits. Plain Conv/ReLU/Linear blocks with no batch norm,
    so every layer maps one-to-one onto a quantized ONNX operator.

    Args:
        channels (tuple[int, int, int], default (16, 32, 64)): output channels of the convs.
        hidden (int, default 64): width of the hidden linear layer.
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), hidden: int = 64):
        import torch.nn as nn

        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels) or int(hidden) < 1:
            raise ValueError(f"channels must be three positive ints and hidden positive, got "
                             f"{channels!r}, {hidden!r}")
        c1, c2, c3 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * 4, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(self.features(x))


def train_cnn(model, data: Digits, epochs: int = 15, *, lr: float = 3e-3, batch_size: int = 64,
              seed: int = 0, threads: int | None = 1, progress: bool = False) -> list[dict]:
    """Train a classifier on the digits' training split with Adam and cross-entropy.

    Works for any module that maps (B, 1, 8, 8) images to (B, 10) logits (pruned, distilled
    or fake-quantized variants too). The model is trained in place and left in eval mode.

    Args:
        model (torch.nn.Module): the classifier.
        data (Digits): from `load_digits_split`.
        epochs (int, default 15): passes over the training split (~0.1-0.3 s each on a CPU).
        lr (float, default 3e-3): Adam learning rate.
        batch_size (int, default 64): images per step.
        seed (int, default 0): seeds the initial shuffle order (and nothing else: seed the
            model's initialisation with `deploylab.seed_everything` before building it).
        threads (int | None, default 1): torch threads while training; layers this small
            train fastest on one thread (more only add synchronisation), None keeps torch's.
        progress (bool, default False): a tqdm bar over epochs.

    Returns:
        list[dict]: one row per epoch: epoch, loss (mean training loss), test_accuracy.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if batch_size < 1 or lr <= 0:
        raise ValueError(f"batch_size must be >= 1 and lr > 0, got {batch_size}, {lr}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="training", unit="epoch")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train_loop(model, data, epochs_iter, opt, loss_fn, gen, batch_size)
    finally:
        torch.set_num_threads(old_threads)
        model.eval()


def _train_loop(model, data, epochs_iter, opt, loss_fn, gen, batch_size) -> list[dict]:
    history = []
    n = len(data.y_train)
    for epoch in epochs_iter:
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        history.append({"epoch": epoch + 1, "loss": total / n,
                        "test_accuracy": accuracy(model, data)})
    return history


def predict(model, x, *, batch_size: int = 512) -> np.ndarray:
    """Logits of a classifier for images `x`, in batches, without gradients.

    Args:
        model (torch.nn.Module | Callable[[np.ndarray], np.ndarray]): a torch module, or any
            callable taking a float32 (B, 1, 8, 8) array and returning (B, 10) logits (an
            ONNX Runtime session wrapped in a lambda, for instance).
        x (torch.Tensor | np.ndarray): (N, 1, 8, 8) images.
        batch_size (int, default 512): images per call.

    Returns:
        np.ndarray: (N, 10) float32 logits.
    """
    is_module = isinstance(model, torch.nn.Module)
    if not is_module and not callable(model):
        raise TypeError(f"model must be a torch module or a callable, not {type(model).__name__}")
    arr = x.numpy() if hasattr(x, "numpy") else np.asarray(x, dtype=np.float32)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(arr), batch_size):
            chunk = arr[i:i + batch_size]
            out = model(torch.from_numpy(chunk)) if is_module else model(chunk)
            outs.append(out.float().numpy() if hasattr(out, "numpy") else np.asarray(out))
    return np.concatenate(outs) if outs else np.zeros((0, NUM_CLASSES), np.float32)


def accuracy(model, data: Digits, split: str = "test") -> float:
    """Top-1 accuracy of a classifier on one split of the digits.

    Args:
        model (torch.nn.Module | Callable): as in `predict`.
        data (Digits): from `load_digits_split`.
        split (str, default "test"): "test" or "train".

    Returns:
        float: the fraction of images classified correctly, in [0, 1].
    """
    x, y = data.split(split)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        logits = predict(model, x)
    finally:
        if was_training:
            model.train()
    return float((logits.argmax(axis=1) == np.asarray(y)).mean())


def pretrained_cnn(seed: int = 0, epochs: int = 15, *,
                   factory: Callable[[], object] = DigitsCNN) -> tuple[object, Digits]:
    """A trained digits CNN and its data, trained once per (seed, epochs) and cached.

    The weights are cached under `deploylab.cache_dir("models")`, keyed by the seed, the
    epochs and the architecture, so a second call (another notebook, a benchmark) loads them
    in milliseconds and every chapter starts from the same reference model.

    Args:
        seed (int, default 0): seeds initialisation, split and shuffling.
        epochs (int, default 15): training epochs.
        factory (Callable[[], nn.Module], default DigitsCNN): builds the untrained model.

    Returns:
        tuple: (model in eval mode, Digits).
    """
    from .settings import cache_dir, seed_everything

    seed_everything(seed)
    model = factory()
    data = load_digits_split(seed)
    arch = json.dumps({k: list(v.shape) for k, v in model.state_dict().items()}, sort_keys=True)
    key = hashlib.sha256(f"{arch}|{seed}|{epochs}|v1".encode()).hexdigest()[:16]
    file = cache_dir("models") / f"digits-cnn-{key}.pt"
    if file.is_file():
        try:
            model.load_state_dict(torch.load(file, weights_only=True))
            return model.eval(), data
        except Exception:  # a corrupt or stale cache is retrained and rewritten
            file.unlink(missing_ok=True)
    train_cnn(model, data, epochs, seed=seed)
    tmp = file.with_name(f".{file.name}.tmp")
    try:
        torch.save(model.state_dict(), tmp)
        tmp.replace(file)
    except OSError as e:
        raise DeploylabError(f"could not cache the trained CNN at {file}: {e}; check that the "
                             "cache folder (DEPLOYLAB_CACHE) is writable") from e
    finally:
        tmp.unlink(missing_ok=True)
    return model.eval(), data
