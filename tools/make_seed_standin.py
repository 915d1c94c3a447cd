#!/usr/bin/env python3
"""Writes a MiniGPT-Med-shaped stand-in at the real per-tensor sizes (EVA ViT-g width 1408, LLaMA-2-7B width 4096,
vocabulary 32000, LoRA r 64) but with few layers, in the seeds' file layouts (PyTorch zip checkpoints, fp16 HF shards),
to measure what `xrayvl import minigpt-med` needs in time and memory as the layer count grows. Values are a fixed small
pattern (timing only, not a model). No torch needed: the pickles are written with stand-in classes named as torch's.

usage: make_seed_standin.py OUT LLAMA_LAYERS EVA_BLOCKS TOKENIZER_DIR
"""
import collections, json, os, pickle, shutil, struct, sys, types, zipfile

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
class HalfStorage: pass
class FloatStorage: pass
def _rebuild_tensor_v2(*args): pass
HalfStorage.__module__ = FloatStorage.__module__ = "torch"; _rebuild_tensor_v2.__module__ = "torch._utils"
torch.HalfStorage, torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = HalfStorage, FloatStorage, utils, _rebuild_tensor_v2
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils

class Storage:
    def __init__(self, key, kind, numel): self.key, self.kind, self.numel = key, kind, numel

class Tensor:
    def __init__(self, storage, shape): self.storage, self.shape = storage, shape
    def __reduce__(self):
        stride, s = [], 1
        for d in reversed(self.shape): stride.insert(0, s); s *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", obj.kind, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None

def pattern(fp16):
    values = [((i % 17) - 8) * 0.002 for i in range(1 << 16)]
    return struct.pack(f"<{len(values)}{'e' if fp16 else 'f'}", *values)

PATTERNS = {True: pattern(True), False: pattern(False)}

def save(path, tensors, wrap=None):
    """tensors: list of (name, shape, fp16); the state dict is the root, or root[wrap]."""
    stem = os.path.splitext(os.path.basename(path))[0]
    state, data = collections.OrderedDict(), []
    for i, (name, shape, fp16) in enumerate(tensors):
        numel = 1
        for d in shape: numel *= d
        state[name] = Tensor(Storage(str(i), HalfStorage if fp16 else FloatStorage, numel), shape)
        data.append((str(i), numel * (2 if fp16 else 4), fp16))
    root = {wrap: state, "epoch": 0} if wrap else state
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        with z.open(f"{stem}/data.pkl", "w") as f: Pickler(f, protocol=2).dump(root)
        for key, nbytes, fp16 in data:
            with z.open(f"{stem}/data/{key}", "w", force_zip64=True) as f:
                block = PATTERNS[fp16]
                while nbytes > 0:
                    f.write(block[:min(nbytes, len(block))]); nbytes -= len(block)
        z.writestr(f"{stem}/version", "3\n")

def main(out, layers, blocks, tokenizer_dir):
    layers, blocks = int(layers), int(blocks)
    os.makedirs(out, exist_ok=True)
    E, M = 1408, 6144
    eva = [("cls_token", [1, 1, E], True), ("pos_embed", [1, 257, E], True), ("patch_embed.proj.weight", [E, 3, 14, 14], True), ("patch_embed.proj.bias", [E], True)]
    for b in range(blocks):
        p = f"blocks.{b}."
        eva += [(p + "norm1.weight", [E], True), (p + "norm1.bias", [E], True), (p + "attn.q_bias", [E], True), (p + "attn.v_bias", [E], True),
                (p + "attn.qkv.weight", [3 * E, E], True), (p + "attn.proj.weight", [E, E], True), (p + "attn.proj.bias", [E], True),
                (p + "norm2.weight", [E], True), (p + "norm2.bias", [E], True), (p + "mlp.fc1.weight", [M, E], True), (p + "mlp.fc1.bias", [M], True),
                (p + "mlp.fc2.weight", [E, M], True), (p + "mlp.fc2.bias", [E], True)]
    save(os.path.join(out, "eva_vit_g.pth"), eva)
    H, F, V = 4096, 11008, 32000
    llm = os.path.join(out, "llama"); os.makedirs(llm, exist_ok=True)
    shards, index = [[("model.embed_tokens.weight", [V, H], True)]], {}
    for l in range(layers):
        p = f"model.layers.{l}."
        shards.append([(p + n, s, True) for n, s in [("self_attn.q_proj.weight", [H, H]), ("self_attn.k_proj.weight", [H, H]), ("self_attn.v_proj.weight", [H, H]),
                       ("self_attn.o_proj.weight", [H, H]), ("mlp.gate_proj.weight", [F, H]), ("mlp.up_proj.weight", [F, H]), ("mlp.down_proj.weight", [H, F]),
                       ("input_layernorm.weight", [H]), ("post_attention_layernorm.weight", [H])]])
    shards[-1] += [("model.norm.weight", [H], True), ("lm_head.weight", [V, H], True)]
    for i, shard in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        save(os.path.join(llm, name), shard)
        index.update({n: name for n, _, _ in shard})
    json.dump({"metadata": {}, "weight_map": index}, open(os.path.join(llm, "pytorch_model.bin.index.json"), "w"))
    json.dump({"model_type": "llama", "hidden_size": H, "intermediate_size": F, "num_hidden_layers": layers, "num_attention_heads": 32,
               "num_key_value_heads": 32, "vocab_size": V, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "tie_word_embeddings": False,
               "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "float16"}, open(os.path.join(llm, "config.json"), "w"))
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), llm)
    stage = [("llama_proj.weight", [H, 4 * E], False), ("llama_proj.bias", [H], False)]
    for l in range(layers):
        for proj in ("q_proj", "v_proj"):
            p = f"llama_model.base_model.model.model.layers.{l}.self_attn.{proj}."
            stage += [(p + "lora_A.weight", [64, H], False), (p + "lora_B.weight", [H, 64], False)]
    save(os.path.join(out, "checkpoint_stage3.pth"), stage, wrap="model")

if __name__ == "__main__":
    main(*sys.argv[1:])
