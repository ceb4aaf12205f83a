"""Train the bundled sample models on scikit-learn's ``digits`` set and export them to ONNX.

Run once from the repository root (needs the ``train`` extra: torch, scikit-learn)::

    python scripts/train_samples.py

Writes into ``resources/samples/``:

- ``vit-digits.onnx``: tiny vision Transformer (2x2 patches -> 16 tokens + class token,
  dim 64, 4 heads, 2 pre-norm encoder blocks, exact-erf GELU MLP, linear head).
- ``cnn-digits.onnx``: tiny CNN (3x [Conv3x3 + BatchNorm + ReLU], MaxPool,
  GlobalAveragePool, Flatten, Gemm head); BatchNormalization nodes are kept, not folded.
- ``digits-calib.npz``: ``image`` = 64 preprocessed training images, float32 (64, 1, 8, 8).
- ``digits-val.npz``: ``image`` float32 (360, 1, 8, 8) and ``labels`` int64 (360,), the
  last 360 samples of the data set, never trained on.

Preprocessing (shared by both models, recorded in each model's ``metadata_props``):
pixels (0..16) are divided by 16 to [0, 1], then normalised with the scalar mean and
standard deviation of all training pixels: ``x = (pixels / 16 - mean) / std``.

Both models take ``image`` float32 (batch, 1, 8, 8), NCHW, with a symbolic batch
dimension named ``batch``, and return ``logits`` float32 (batch, 10).
Export: legacy TorchScript exporter (``dynamo=False``), opset 17. The script checks each
graph uses only the ops the project's float executor supports, runs ``onnx.checker``,
and compares onnxruntime with torch on the validation split (batch 360, 1 and 7).
"""

from __future__ import annotations

import collections
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from sklearn.datasets import load_digits
from torch import nn

SEED = 0
N_VAL = 360  # last N_VAL samples of the data set: validation, never trained on
N_CALIB = 64
OPSET = 17
MAX_BYTES = 2 * 1024 * 1024
OUT_DIR = Path(__file__).resolve().parent.parent / "resources" / "samples"

# the ops the project's float executor supports; an exported graph must use only these
ALLOWED_OPS = frozenset(
    "MatMul Gemm Conv BatchNormalization LayerNormalization Softmax Erf Relu Add Sub Mul Div Pow "
    "Sqrt ReduceMean Reshape Transpose Flatten Squeeze Unsqueeze Concat Split Slice Gather Expand "
    "Shape Constant Cast MaxPool GlobalAveragePool Identity Where Equal ConstantOfShape Range".split()
)


def seed_everything(seed: int) -> None:
    """Seed numpy and torch; make torch deterministic and single-threaded.

    One thread: these models are tiny, and on a shared 2-core machine intra-op threads
    mostly wait for each other (training steps measured ~20x slower with 2 threads while another process ran).
    """
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- data


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Digits split into train (first 1437) and validation (last 360), preprocessed.

    Returns (x_train, y_train, x_val, y_val, mean, std); images are float32 NCHW
    (N, 1, 8, 8) after ``(pixels / 16 - mean) / std``; labels are int64.
    """
    digits = load_digits()
    pixels = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    n_train = len(pixels) - N_VAL
    mean = float(pixels[:n_train].mean())
    std = float(pixels[:n_train].std())
    x = ((pixels - np.float32(mean)) / np.float32(std)).astype(np.float32)[:, None, :, :]
    return x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], mean, std


def augment(x: torch.Tensor, background: float, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 1 pixel in y and x (NCHW); vacated pixels get ``background``."""
    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=background)  # (N, 1, 10, 10)
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(8)[None, :]  # (N, 8)
    cols = dx[:, None] + torch.arange(8)[None, :]  # (N, 8)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]][:, None, :, :]


# ----------------------------------------------------------------------------- models


class Attention(nn.Module):
    """Multi-head self-attention spelled out as MatMul -> Mul(scale) -> Softmax -> MatMul."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.tokens = tokens
        self.dim = dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        # (B, T, dim) -> (B, heads, T, head_dim); -1 keeps the batch symbolic with a constant shape
        return t.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q(x))
        k = self._split_heads(self.k(x))
        v = self._split_heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, heads, T, T)
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v)  # (B, heads, T, head_dim)
        out = out.transpose(1, 2).reshape(-1, self.tokens, self.dim)
        return self.proj(out)


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)); x + MLP(LN(x)), MLP = Linear-GELU(erf)-Linear."""

    def __init__(self, dim: int, heads: int, tokens: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate="none"), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Vision Transformer for (B, 1, 8, 8) images: 2x2 patches -> 16 tokens + class token."""

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 2, mlp_dim: int = 128, patch: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.n_patches = (8 // patch) ** 2
        tokens = self.n_patches + 1
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, tokens, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)  # (B, dim, 4, 4)
        x = x.reshape(-1, self.dim, self.n_patches).transpose(1, 2)  # (B, 16, dim)
        cls = self.cls_token.expand(x.shape[0], 1, self.dim)  # (B, 1, dim)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 17, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


class TinyCNN(nn.Module):
    """CNN for (B, 1, 8, 8): 2x [Conv3x3-BN-ReLU] -> MaxPool 2 -> Conv3x3-BN-ReLU -> GAP -> Gemm."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


# ----------------------------------------------------------------------------- training


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    background: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float = 0.0,
) -> None:
    """AdamW with a cosine learning-rate schedule, batch 64, 1-pixel shift augmentation."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            xb = augment(x[idx], background, gen)
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1:3d}/{epochs}: train loss {total / len(x):.4f}")
    model.eval()


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits (N, 10) float32 of an eval-mode model."""
    model.eval()
    return model(torch.from_numpy(x)).numpy()


# ----------------------------------------------------------------------------- export + checks


def export(
    model: nn.Module, path: Path, mean: float, std: float, description: str, fold_constants: bool
) -> onnx.ModelProto:
    """Export with the TorchScript exporter, opset 17, symbolic batch dim ``batch``.

    ``fold_constants=False`` keeps BatchNormalization nodes (the exporter would otherwise
    fold them into the Conv weights); the ViT folds constants so Linear weights are stored
    pre-transposed instead of going through a Transpose node each.
    """
    model.eval()
    dummy = torch.zeros(2, 1, 8, 8)
    with warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (standard opset-17 ops, see module doc)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=fold_constants,
            training=torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    name_matmul_weights(proto, model)
    proto.doc_string = description
    meta = {
        "preprocess": "x = (pixels / 16 - mean) / std; pixels are sklearn digits values 0..16, layout NCHW (N,1,8,8)",
        "preprocess_mean": repr(mean),
        "preprocess_std": repr(std),
        "classes": "digits 0..9 (logits index = digit)",
        "source": "deployment-inspector scripts/train_samples.py (sklearn digits, last 360 samples held out)",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(proto, str(path))
    return proto


def name_matmul_weights(proto: onnx.ModelProto, model: nn.Module) -> None:
    """Rename the exporter's ``onnx::MatMul_N`` weight initialisers after their parameter.

    Constant folding stores each 3-D Linear's weight transposed, shape (in, out), under a
    generated name; the parameter ``blocks.0.attn.q.weight`` whose transpose equals it
    exactly names it ``blocks.0.attn.q.weight_t``, so the inspector's tables show layers.
    """
    weights = {name: p.detach().numpy().T for name, p in model.named_parameters() if p.ndim == 2}
    renames: dict[str, str] = {}
    for init in proto.graph.initializer:
        if not init.name.startswith("onnx::MatMul_"):
            continue
        value = numpy_helper.to_array(init)
        matches = [n for n, w in weights.items() if w.shape == value.shape and np.array_equal(w, value)]
        if len(matches) != 1:
            raise SystemExit(f"initialiser {init.name}: {len(matches)} parameters match its value")
        renames[init.name] = f"{matches[0]}_t"
        init.name = renames[init.name]
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    counts = collections.Counter(node.op_type for node in proto.graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def check_exported(proto: onnx.ModelProto, path: Path) -> None:
    """Checker, allowed ops only, named symbolic batch dim on input and output, size < 2 MB."""
    onnx.checker.check_model(proto, full_check=True)
    bad = {n.op_type for n in proto.graph.node} - ALLOWED_OPS
    if bad:
        raise SystemExit(f"{path.name}: ops outside the float executor's set: {sorted(bad)}")
    for vi in (proto.graph.input[0], proto.graph.output[0]):
        dim0 = vi.type.tensor_type.shape.dim[0]
        if dim0.dim_param != "batch":
            raise SystemExit(f"{path.name}: {vi.name} batch dim is {dim0} (want symbolic 'batch')")
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise SystemExit(f"{path.name}: {size} bytes, over the 2 MB limit")


def verify_with_ort(
    path: Path, model: nn.Module, x_val: np.ndarray, y_val: np.ndarray
) -> tuple[float, float, float]:
    """Accuracy from torch and from onnxruntime on the validation split; max |logit diff|.

    Also runs onnxruntime with batch 1 and batch 7 and checks those logits equal the
    full-batch ones (atol 1e-4), i.e. the batch dimension really is symbolic.
    """
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = torch_logits(model, x_val)
    got = sess.run(["logits"], {"image": x_val})[0]
    if got.shape != (len(x_val), 10) or got.dtype != np.float32:
        raise SystemExit(f"{path.name}: onnxruntime logits are {got.dtype} {got.shape}")
    max_diff = float(np.abs(got - ref).max())
    for n in (1, 7):
        part = sess.run(["logits"], {"image": x_val[:n]})[0]
        if part.shape != (n, 10):
            raise SystemExit(f"{path.name}: batch {n} gives logits of shape {part.shape}")
        np.testing.assert_allclose(part, got[:n], rtol=0, atol=1e-4)
    acc_torch = float((ref.argmax(1) == y_val).mean())
    acc_ort = float((got.argmax(1) == y_val).mean())
    return acc_torch, acc_ort, max_diff


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    t_start = time.perf_counter()
    seed_everything(SEED)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_val, y_val, mean, std = load_split()
    background = (0.0 - mean) / std  # a blank (0) pixel after preprocessing
    print(f"digits: {len(x_train)} train, {len(x_val)} val; preprocessing mean={mean:.6f} std={std:.6f}")

    calib_idx = np.sort(np.random.default_rng(SEED).choice(len(x_train), N_CALIB, replace=False))
    np.savez(OUT_DIR / "digits-calib.npz", image=x_train[calib_idx])
    np.savez(OUT_DIR / "digits-val.npz", image=x_val, labels=y_val)

    specs = [
        (
            "vit-digits.onnx",
            TinyViT,
            dict(epochs=80, lr=3e-3, weight_decay=0.05, label_smoothing=0.1),
            True,
            "Tiny vision Transformer on sklearn digits: 2x2 patch Conv -> 16 tokens + class token, "
            "learned positional embedding, 2 pre-norm encoder blocks (dim 64, 4 heads, GELU MLP 128), "
            "LayerNorm, linear head. Input image (batch,1,8,8) float32, output logits (batch,10).",
        ),
        (
            "cnn-digits.onnx",
            TinyCNN,
            dict(epochs=40, lr=1e-2, weight_decay=5e-4, label_smoothing=0.1),
            False,
            "Tiny CNN on sklearn digits: 2x [Conv3x3+BatchNorm+ReLU] (16, 32 ch), MaxPool 2x2, "
            "Conv3x3+BatchNorm+ReLU (64 ch), GlobalAveragePool, Flatten, Gemm head. "
            "Input image (batch,1,8,8) float32, output logits (batch,10).",
        ),
    ]
    for filename, model_class, hparams, fold_constants, description in specs:
        torch.manual_seed(SEED)  # each model's init and training independent of the other's
        model = model_class()
        t0 = time.perf_counter()
        print(f"\n{filename}: {n_params(model)} parameters, training {hparams}")
        train(model, x_train, y_train, background, **hparams)
        path = OUT_DIR / filename
        proto = export(model, path, mean, std, description, fold_constants)
        check_exported(proto, path)
        acc_torch, acc_ort, max_diff = verify_with_ort(path, model, x_val, y_val)
        print(f"  trained + exported in {time.perf_counter() - t0:.1f} s; file {path.stat().st_size} bytes")
        print(f"  op histogram ({len(proto.graph.node)} nodes): {op_histogram(proto)}")
        print(
            f"  validation accuracy: torch {acc_torch * 100:.2f}%, onnxruntime {acc_ort * 100:.2f}% "
            f"(max |logit diff| {max_diff:.2e})"
        )
        if acc_torch != acc_ort:
            raise SystemExit(f"{filename}: onnxruntime accuracy {acc_ort} differs from torch {acc_torch}")
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
