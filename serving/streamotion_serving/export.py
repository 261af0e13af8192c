"""`streamotion model export`: ONNX for the onnx backend, optionally dynamically quantized to int8."""

from __future__ import annotations

import warnings
from pathlib import Path

from streamotion_serving.model import ONNX_DIR


def export_onnx(model_dir: str | Path, quantize: bool = False, opset: int = 17) -> dict[str, Path]:
    """Write MODEL/onnx/model.onnx (dynamic batch and sequence axes) and, with ``quantize``,
    MODEL/onnx/model.int8.onnx (dynamic int8 weights of the MatMuls)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    from streamotion_serving.model import model_arch

    if model_arch(model_dir) == "linear":
        raise ValueError(f"{model_dir} is a linear model: it has no ONNX export, serve it as it is")
    out = model_dir / ONNX_DIR
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    model.config.return_dict = False
    enc = tokenizer(
        ["an example text", "and another, longer example text"], padding=True, return_tensors="pt"
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    args = tuple(enc[n] for n in names)
    onnx_path = out / "model.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(onnx_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    paths = {"onnx": onnx_path}
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q_path = out / "model.int8.onnx"
        quantize_dynamic(str(onnx_path), str(q_path), weight_type=QuantType.QInt8)
        paths["onnx_int8"] = q_path
    return paths
