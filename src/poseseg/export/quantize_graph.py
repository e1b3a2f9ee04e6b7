"""The graph side of int8 quantization: which nodes of an fp32 export stay fp32 and why, the weights
made quantizable, and the checks and metadata of the int8 file (:mod:`poseseg.export.quantize` runs ORT).

Nodes are found by the names the exporter gives them (module paths: ``/keypoint_head/heatmap_deconv/...``)
and, for DeformConv, by the graph itself: its inputs are followed back to the layers computing them.
"""
from __future__ import annotations

import json

from poseseg.export.checksum import CHECKSUM_KEY, PLACEHOLDER
from poseseg.export.deform_symbolic import ExportError
from poseseg.export.onnx_export import all_nodes

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "DeformConv"})
# ops that pass values (or a slice, a reshape of them) from a layer to a DeformConv: offsets -> Slice,
# mask -> Slice, Sigmoid, Mul; input -> Relu
PASS_THROUGH_OPS = frozenset({"Relu", "Clip", "Sigmoid", "Mul", "Slice", "Split", "Concat", "Reshape", "Transpose",
                              "Squeeze", "Unsqueeze", "Identity", "Cast", "MaxPool"})
KEYPOINT_HEAD_REASON = ("the keypoint head's last layers (heatmap and offset deconvolutions, upsampling): int8 "
                        "heatmap logits flatten the peaks and collapse keypoint confidences")
OUTPUT_REASON = ("a head's output layer (RPN objectness and box deltas, box class scores and deltas, mask logits): "
                 "int8 steps in its outputs move proposals and boxes (measured: box IoU with fp32 0.95 -> 0.98)")
DEFORM_POOL_REASON = "deformable RoI pooling's offset layer: int8 offsets move the sampling points"
DEFORM_REASON = ("DeformConv, the layers computing its input, offsets and mask, and the other readers of them: int8 "
                 "offsets move the sampling points")
# node-name prefixes -> why the layer stays fp32 (benchmarks/RESULTS.md, "ONNX Runtime int8")
DEFAULT_FP32_LAYERS: tuple[tuple[str, str], ...] = (
    ("/keypoint_head/heatmap_deconv/", KEYPOINT_HEAD_REASON),
    ("/keypoint_head/offset_deconv/", KEYPOINT_HEAD_REASON),
    ("/keypoint_head/Resize", KEYPOINT_HEAD_REASON),
    ("/rpn/head/cls_logits", OUTPUT_REASON),
    ("/rpn/head/bbox_pred", OUTPUT_REASON),
    ("/box_head/cls_score/", OUTPUT_REASON),
    ("/box_head/bbox_pred/", OUTPUT_REASON),
    ("/mask_head/predictor/", OUTPUT_REASON),
    ("/box_pooler/offset_fc/", DEFORM_POOL_REASON),
    ("/mask_pooler/offset_fc/", DEFORM_POOL_REASON),
    ("/keypoint_pooler/offset_fc/", DEFORM_POOL_REASON),
)


def fp32_layers(graph, rules: tuple[tuple[str, str], ...] = DEFAULT_FP32_LAYERS) -> dict[str, str]:
    """Node name -> why it stays fp32: the nodes whose names start with a prefix of ``rules``, and every
    DeformConv with what computes its inputs (back through Relu, Slice, Sigmoid... to the nearest weighted
    layer) and every other reader of those tensors, so that no DeformConv input passes through int8."""
    keep = {n.name: why for n in graph.node for prefix, why in rules if n.name.startswith(prefix)}
    producer = {out: n for n in graph.node for out in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    for deform in (n for n in graph.node if n.op_type == "DeformConv"):
        keep[deform.name] = DEFORM_REASON
        todo, seen = [name for name in deform.input if name], set()
        while todo:
            tensor = todo.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for reader in readers.get(tensor, []):  # a quantized reader would put the tensor through int8
                keep[reader.name] = DEFORM_REASON
            node = producer.get(tensor)
            if node is None or node.op_type not in WEIGHTED_OPS | PASS_THROUGH_OPS:
                continue
            keep[node.name] = DEFORM_REASON
            if node.op_type in PASS_THROUGH_OPS:
                todo.extend(name for name in node.input if name in producer)
    return keep


def check_keypoint_layers_found(outputs: list[str], kept: dict[str, str], rules: tuple[tuple[str, str], ...]) -> None:
    """With the keypoint rules in ``rules``, a model with keypoints must have its heatmap layers found by
    name: never quantize them by accident (a file whose nodes another exporter named)."""
    wanted = any(why == KEYPOINT_HEAD_REASON for _, why in rules)
    if wanted and "keypoints" in outputs and not any(why == KEYPOINT_HEAD_REASON for why in kept.values()):
        raise ExportError("cannot find the keypoint head's heatmap layers (nodes named '/keypoint_head/"
                          "heatmap_deconv/...') in the fp32 file, so they could not be kept in fp32; export it with "
                          "this poseseg version's `poseseg export`")


def own_weights(graph) -> None:
    """Give a weight or bias that reaches its node through an Identity (the exporter's de-duplication of
    equal constants: zero biases, as in an untrained model) its own initializer. ORT quantizes only an
    initializer: a bias behind an Identity stays fp32, and the node with it, run in fp32 between Dequantize
    and Quantize, ends up slower than in the fp32 file (measured: 7 of 36 convolutions of `tiny` fused)."""
    import onnx

    initializers = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or node.op_type == "DeformConv":
            continue
        for slot in (1, 2):  # weight, bias
            via = producer.get(node.input[slot]) if len(node.input) > slot else None
            if via is None or via.op_type != "Identity" or via.input[0] not in initializers:
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[via.input[0]])
            copy.name = f"{via.input[0]}/{node.name}"
            graph.initializer.append(copy)
            node.input[slot] = copy.name
    read = {name for n in all_nodes(graph) for name in n.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in read]:
        graph.node.remove(node)


def check_deform_inputs_fp32(graph) -> None:
    """The int8 graph's DeformConvs read no dequantized tensor (what :func:`fp32_layers` is for)."""
    producer = {out: n for n in graph.node for out in n.output}
    for node in (n for n in graph.node if n.op_type == "DeformConv"):
        for name in node.input:
            source = producer.get(name)
            if source is not None and source.op_type == "DequantizeLinear":
                raise ExportError(f"internal error: DeformConv {node.name}'s input {name} comes through int8 "
                                  f"({source.name}); please report it")


def count_quantized(graph) -> int:
    """Weighted nodes whose weights are int8 (dequantized: QDQ), plus QLinear ops (QOperator)."""
    producer = {out: n.op_type for n in graph.node for out in n.output}
    qdq = sum(1 for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and
              producer.get(n.input[1]) == "DequantizeLinear")
    return qdq + sum(1 for n in graph.node if n.op_type.startswith("QLinear") or n.op_type == "ConvInteger")


def write_metadata(proto, fp32_meta: dict[str, str], quantization: dict) -> None:
    """The fp32 file's entries, a ``quantization`` entry, and the checksum placeholder last (for ``seal``)."""
    entries = {k: v for k, v in fp32_meta.items() if k != CHECKSUM_KEY}
    entries["quantization"] = json.dumps(quantization)
    entries[CHECKSUM_KEY] = PLACEHOLDER
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
