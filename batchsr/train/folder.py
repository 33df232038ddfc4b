"""A trained model's folder: weights, ONNX, manifest (through compile/), config, record."""

from __future__ import annotations

from pathlib import Path

from batchsr.filters import kernel_of
from batchsr.manifest import MANIFEST_NAME
from batchsr.train.config import TrainConfig
from batchsr.train.loop import TrainResult, save_weights
from batchsr.train.report import training_md
from batchsr.versions import versions

__all__ = ["build_model_folder"]


def build_model_folder(result: TrainResult, cfg: TrainConfig, out: Path) -> Path:
    """Write a trained model's folder: weights, ONNX, manifest, config, TRAINING.md.

    Files: ``<name>.safetensors`` (the bare network), ``<name>.onnx`` (dynamic batch,
    height and width, checked against torch within 1e-4; with ``cfg.postprocess`` the
    filter is embedded in it), ``manifest.json``, ``train.toml`` (the config) and
    ``TRAINING.md`` (data, licences, figures). With an embedded postprocess the
    safetensors file is not listed as a manifest artifact, because running it alone
    would skip the filter; ``with_filter(load_checkpoint(...), manifest.postprocess)``
    rebuilds the deployed network from it.

    Returns:
        The manifest's path.

    Raises:
        CompileError: the ONNX export fails or differs from torch.
    """
    # The training CLI is an application entry point (like run.py), so it may drive
    # compile/; the zoo itself (batchsr.models) never imports compile.
    from batchsr.manifest import file_artifact
    from batchsr.models.postprocess import with_filter
    from compile.model_folder import write_model_folder, write_onnx

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{cfg.name}.safetensors"
    save_weights(result.model.module.state_dict(), weights, result.model, cfg)
    onnx_path = out / f"{cfg.name}.onnx"
    shapes, example, opset = cfg.check_shapes, cfg.example_shape, cfg.opset
    bare = write_onnx(result.model, onnx_path, check_shapes=shapes, example=example, opset=opset)
    onnx = bare
    if cfg.postprocess is not None:
        # The deployed file embeds the filter. Its input rounding to 8-bit levels
        # flips where torch and onnxruntime straddle a half level, moving an output
        # by up to sum(|kernel|) / 255; the network itself was checked at 1e-4 above.
        deployed = with_filter(result.model, cfg.postprocess)
        bound = float(abs(kernel_of(cfg.postprocess).as_array()).sum()) / 255.0 + 1e-4
        onnx = write_onnx(
            deployed, onnx_path, check_shapes=shapes, example=example, opset=opset, atol=bound
        )
    # With an embedded filter the bare weights are no artifact: run alone, they skip it.
    more = [file_artifact(weights, "safetensors", onnx.shapes)] if cfg.postprocess is None else []
    (out / "train.toml").write_text(cfg.source, encoding="utf-8")
    (out / "TRAINING.md").write_text(training_md(result, cfg, bare.max_abs_diff), encoding="utf-8")
    write_model_folder(
        out,
        cfg.name,
        onnx,
        more=more,
        postprocess=cfg.postprocess,
        tools=versions("onnxscript"),
        notes=(
            f"Trained by batchsr.train (config train.toml, sha256 {cfg.sha256[:12]}) on "
            "openly licensed photos from scikit-image's skimage/data; see TRAINING.md."
        ),
    )
    return out / MANIFEST_NAME
