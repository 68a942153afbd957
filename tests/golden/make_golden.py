"""Writes the golden fixtures of tests/golden from the real PyTorch peer libraries.

kosmos1: the seed composition of KOSMOS-1 (bjoernpl/KOSMOS_reimplementation's modules): a transformers
  CLIPVisionModel tower (`clip_model`, last layer trainable, last_hidden_state features), a flamingo-pytorch
  PerceiverResampler (`perceive`), a bias-free `image_proj`, and a torchscale Decoder (subln, xPos, embed scale
  sqrt(d)) called as Decoder(tokens, token_embeddings=E) with each image's slots of E overwritten.
kosmos2: transformers' Kosmos2ForConditionalGeneration (no xPos, sinusoidal positions, XConnector, tied head).

Both are tiny random models whose every parameter (LayerNorms included) is perturbed, in fp32 on the CPU, in eval
mode. Each fixture folder holds config.json (kosmos model config, peer key names), weights.safetensors (the
peer's own parameter names; kosmos2 also has hf_config.json, the HF config), inputs.safetensors, and
expected.safetensors: logits, the masked next-token loss,
every parameter gradient (as "grad:<peer name>"), the losses of 3 AdamW steps, and for kosmos2 8 greedy tokens.
Rerun: see tests/golden/README.md.
"""
import json
import os
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_py311_compat  # noqa: F401,E402  (Debian's torch 1.13 on Python 3.11; before transformers)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PAD, BOS, EOS = 1, 0, 2
VOCAB, IMAGE, IMAGE_END = 100, 98, 99
ADAM = dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)


def perturb(module, generator):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def sequences(num_latents, images_per_row, length, generator):
    """Token rows: <s> (<image> [slots] </image> caption)* </s> <pad>..., targets and loss weights (spec 8.3)."""
    tokens, targets, weights = [], [], []
    for row, count in enumerate(images_per_row):
        seq, counted = [BOS], [False]
        for _ in range(count):
            seq += [IMAGE] + [IMAGE] * num_latents + [IMAGE_END]
            counted += [False] * (num_latents + 2)
            words = torch.randint(4, IMAGE - 1, (3,), generator=generator).tolist()
            seq += words
            counted += [True] * len(words)
        seq.append(EOS)
        counted.append(True)
        assert len(seq) <= length
        seq += [PAD] * (length - len(seq))
        counted += [False] * (length - len(counted))
        tokens.append(seq)
        targets.append(seq[1:] + [PAD])
        weights.append([1.0 if c else 0.0 for c in counted[1:]] + [0.0])
    return torch.tensor(tokens), torch.tensor(targets), torch.tensor(weights)


def masked_loss(logits, targets, weights):
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (nll * weights.reshape(-1)).sum() / weights.sum()


def write(folder, config, weights, inputs, expected):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, os.path.join(folder, "weights.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in inputs.items()}, os.path.join(folder, "inputs.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in expected.items()}, os.path.join(folder, "expected.safetensors"))
    print(folder, {k: tuple(v.shape) for k, v in expected.items() if not k.startswith("grad:")})


def train_losses(parameters, loss_fn, steps=3):
    """Losses before each of `steps` AdamW steps (no clipping, constant learning rate)."""
    optimizer = torch.optim.AdamW([p for p in parameters if p.requires_grad], **ADAM)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses)


def kosmos1_modules():
    """The seed composition's modules at the fixture's sizes, freshly initialised: {prefix: module}."""
    from flamingo_pytorch.flamingo_pytorch import PerceiverResampler
    from torchscale.architecture.config import DecoderConfig
    from torchscale.architecture.decoder import Decoder
    from transformers import CLIPVisionConfig, CLIPVisionModel

    d, layers, heads, ffn = 32, 2, 4, 64
    dv, latents = 24, 4
    vision_cfg = CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=dv, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=48, hidden_act="quick_gelu")
    clip_model = CLIPVisionModel(vision_cfg).vision_model
    perceive = PerceiverResampler(dim=dv, depth=2, dim_head=8, heads=2, num_latents=latents, num_media_embeds=5)
    image_proj = nn.Linear(dv, d, bias=False)
    embed = nn.Embedding(VOCAB, d, padding_idx=PAD)
    output_projection = nn.Linear(d, VOCAB, bias=False)
    decoder = Decoder(DecoderConfig(vocab_size=VOCAB, decoder_embed_dim=d, decoder_layers=layers,
                                    decoder_attention_heads=heads, decoder_ffn_embed_dim=ffn, subln=True,
                                    xpos_rel_pos=True, no_scale_embedding=False),
                      embed_tokens=embed, output_projection=output_projection)
    return {"clip_model": clip_model, "perceive": perceive, "image_proj": image_proj, "decoder": decoder}


def kosmos1(generator):
    d, layers, heads, ffn = 32, 2, 4, 64
    dv, latents = 24, 4
    modules = kosmos1_modules()
    clip_model, perceive, image_proj, decoder = (modules[k] for k in ("clip_model", "perceive", "image_proj", "decoder"))
    embed = decoder.embed_tokens
    for m in modules.values():
        perturb(m, generator)
        m.eval()
    for p in clip_model.parameters():
        p.requires_grad_(False)
    for p in clip_model.encoder.layers[-1].parameters():
        p.requires_grad_(True)

    tokens, targets, weights = sequences(latents, [1, 2], 26, generator)
    images = torch.randn(3, 3, 28, 28, generator=generator)
    slot_mask = torch.zeros_like(tokens, dtype=torch.bool)
    for row in range(tokens.shape[0]):
        t = 0
        while t < tokens.shape[1]:
            if tokens[row, t] == IMAGE:
                slot_mask[row, t + 1:t + 1 + latents] = True
                t += latents
            t += 1

    def logits_fn():
        feature = clip_model(pixel_values=images).last_hidden_state
        z = image_proj(perceive(feature).squeeze(1))
        e = embed(tokens).clone()
        e[slot_mask] = z.reshape(-1, d)
        return decoder(prev_output_tokens=tokens, token_embeddings=e)[0]

    logits = logits_fn()
    loss = masked_loss(logits, targets, weights)
    loss.backward()
    weights_dict, grads = {}, {}
    for prefix, m in modules.items():
        for name, p in m.named_parameters():
            key = f"{prefix}.{name}"
            if prefix == "decoder" and name in ("embed_tokens.weight", "output_projection.weight"):
                key = f"decoder.{name}"
            weights_dict[key] = p.detach().clone()  # before the AdamW steps below change it
            if p.grad is not None:
                grads["grad:" + key] = p.grad.clone()
        for name, b in m.named_buffers():
            weights_dict[f"{prefix}.{name}"] = b.clone()
    losses = train_losses([p for m in modules.values() for p in m.parameters()],
                          lambda: masked_loss(logits_fn(), targets, weights))
    config = {
        "vocab_size": VOCAB, "decoder_layers": layers, "decoder_embed_dim": d, "decoder_ffn_embed_dim": ffn,
        "decoder_attention_heads": heads, "xpos_rel_pos": True, "xpos_scale_base": 512, "no_scale_embedding": False,
        "share_decoder_input_output_embed": False, "layernorm_eps": 1e-5, "abs_pos": "none", "dropout": 0.0,
        "attention_dropout": 0.0, "bos_token_id": BOS, "pad_token_id": PAD, "eos_token_id": EOS,
        "image_token_id": IMAGE, "image_end_token_id": IMAGE_END,
        "vision": {"hidden_size": dv, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "patch_size": 14, "image_size": 28, "hidden_act": "quick_gelu", "feature": "last_hidden_state",
                   "trainable_layers": 1},
        "connector": {"type": "resampler", "depth": 2, "dim_head": 8, "heads": 2, "num_latents": latents,
                      "num_media_embeds": 5},
    }
    inputs = {"tokens": tokens.int(), "targets": targets.int(), "loss_weights": weights.float(), "images": images}
    expected = {"logits": logits.reshape(-1, VOCAB), "loss": loss.reshape(1), "train_losses": losses, **grads}
    write(os.path.join(HERE, "kosmos1"), config, weights_dict, inputs, expected)


def kosmos2_model():
    """HF Kosmos-2 at the fixture's sizes, freshly initialised."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    d, latents = 32, 4
    cfg = Kosmos2Config(
        text_config=dict(vocab_size=VOCAB, embed_dim=d, layers=2, ffn_dim=64, attention_heads=4,
                         max_position_embeddings=64, scale_embedding=True, pad_token_id=PAD, bos_token_id=BOS,
                         eos_token_id=EOS),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                           image_size=28, patch_size=14, hidden_act="quick_gelu"),
        latent_query_num=latents)
    return Kosmos2ForConditionalGeneration(cfg)


def kosmos2(generator):
    d, latents = 32, 4
    model = kosmos2_model()
    perturb(model, generator)
    model.eval()
    for p in model.vision_model.parameters():
        p.requires_grad_(False)
    for p in model.vision_model.model.encoder.layers[-1].parameters():
        p.requires_grad_(True)

    tokens, targets, weights = sequences(latents, [1, 1], 16, generator)
    images = torch.randn(2, 3, 28, 28, generator=generator)
    mask = torch.zeros_like(tokens)
    mask[:, 2:2 + latents] = 1  # the slots after <image> at position 1

    def logits_fn():
        return model(pixel_values=images, input_ids=tokens, image_embeds_position_mask=mask).logits

    logits = logits_fn()
    loss = masked_loss(logits, targets, weights)
    loss.backward()
    # Copies: the AdamW steps below change the parameters in place.
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "text_model.lm_head.weight"}
    grads = {"grad:" + k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad():
        prompt = 8
        generated = model.generate(pixel_values=images, input_ids=tokens[:, :prompt],
                                   image_embeds_position_mask=mask[:, :prompt], max_new_tokens=8, do_sample=False,
                                   num_beams=1, eos_token_id=None)
    losses = train_losses(list(model.parameters()), lambda: masked_loss(logits_fn(), targets, weights))
    config = {
        "vocab_size": VOCAB, "decoder_layers": 2, "decoder_embed_dim": d, "decoder_ffn_embed_dim": 64,
        "decoder_attention_heads": 4, "xpos_rel_pos": False, "no_scale_embedding": False,
        "share_decoder_input_output_embed": True, "layernorm_eps": 1e-5, "abs_pos": "sinusoidal", "dropout": 0.0,
        "attention_dropout": 0.0, "bos_token_id": BOS, "pad_token_id": PAD, "eos_token_id": EOS,
        "image_token_id": IMAGE, "image_end_token_id": IMAGE_END,
        "vision": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "patch_size": 14, "image_size": 28, "hidden_act": "quick_gelu", "feature": "post_layernorm_l2",
                   "trainable_layers": 1},
        "connector": {"type": "xconnector", "heads": 4, "num_latents": latents},
    }
    # HF marks the slots by a mask, not by token ids: put <image> before them so kosmos finds the same slots.
    tokens_ours = tokens.clone()
    tokens_ours[:, 1] = IMAGE
    inputs = {"tokens": tokens_ours.int(), "hf_input_ids": tokens.int(), "targets": targets.int(),
              "loss_weights": weights.float(), "images": images, "prompt_length": torch.tensor([prompt]).int()}
    expected = {"logits": logits.reshape(-1, VOCAB), "loss": loss.reshape(1), "train_losses": losses,
                "generated": generated.int(), **grads}
    write(os.path.join(HERE, "kosmos2"), config, state, inputs, expected)
    with open(os.path.join(HERE, "kosmos2", "hf_config.json"), "w") as f:  # what save_pretrained writes
        f.write(model.config.to_json_string())


def check_export(kind, path):
    """Loads a safetensors file `kosmos convert` exported into the peer's own modules by their own names: nothing
    unexpected, nothing missing but buffers (and HF's tied lm_head), every loaded tensor equal to the file's."""
    from safetensors.torch import load_file

    state = load_file(path)
    if kind == "kosmos1":
        parts = {prefix: (m, {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
                 for prefix, m in kosmos1_modules().items()}
        allowed_missing = set()
    else:
        parts = {"": (kosmos2_model(), state)}
        allowed_missing = {"text_model.lm_head.weight"}
    loaded = 0
    for prefix, (module, tensors) in parts.items():
        missing, unexpected = module.load_state_dict(tensors, strict=False)
        buffers = {name for name, _ in module.named_buffers()}
        assert not unexpected, f"{path}: {prefix} does not know {unexpected}"
        assert set(missing) <= buffers | allowed_missing, f"{path}: {prefix} misses {set(missing) - buffers}"
        own = module.state_dict()
        for name, value in tensors.items():
            assert torch.equal(own[name], value), f"{path}: {prefix}.{name} did not load as written"
        loaded += len(tensors)
    assert loaded == len(state), f"{path}: {len(state) - loaded} tensors belong to no module"
    print(f"{path}: all {loaded} tensors load into the {kind} peer modules by their own names")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check-export":  # --check-export kosmos1|kosmos2 FILE.safetensors
        check_export(sys.argv[2], sys.argv[3])
        sys.exit(0)
    torch.manual_seed(0)
    kosmos1(torch.Generator().manual_seed(1))
    kosmos2(torch.Generator().manual_seed(2))
