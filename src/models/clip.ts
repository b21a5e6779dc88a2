// CLIPTextModel (transformers): token + position embeddings, pre-LN encoder layers with causal
// self-attention, final_layer_norm. SD 1.x uses last_hidden_state (CLIP-L, quick_gelu); SD 2.x uses
// it too (OpenCLIP-H, gelu); "clip skip" users take the penultimate layer's output.
import type { Engine } from "../runtime/engine.ts";
import { Tensor } from "../runtime/tensor.ts";
import { linear, type LinearWeight } from "../nn/linear.ts";
import { layerNorm } from "../nn/norm.ts";
import { attention } from "../nn/attention.ts";
import { add, gelu, quickGelu } from "../nn/elementwise.ts";
import { assertSupported, CLIP_TEXT_SUPPORTED, type ClipTextConfig } from "./config.ts";
import { WeightStore, type NormParams } from "./weights.ts";

export interface ClipTextOutput {
  /** final_layer_norm(last layer output): [B, L, C]. */
  last: Tensor;
  /** hidden_states[-2]: the output of the second-to-last layer, without the final layer norm: [B, L, C]. */
  penultimate: Tensor;
  /** last at each sequence's end-of-text position: [B, C]. */
  pooled: Tensor;
}

class ClipLayer {
  private constructor(
    private ln1: NormParams,
    private q: LinearWeight,
    private k: LinearWeight,
    private v: LinearWeight,
    private out: LinearWeight,
    private ln2: NormParams,
    private fc1: LinearWeight,
    private fc2: LinearWeight,
    private heads: number,
    private eps: number,
    private act: (x: Tensor) => Tensor,
  ) {}

  static async load(ws: WeightStore, p: string, cfg: ClipTextConfig, act: (x: Tensor) => Tensor): Promise<ClipLayer> {
    const c = cfg.hidden_size;
    const f = cfg.intermediate_size;
    return new ClipLayer(
      await ws.norm(`${p}.layer_norm1`, c),
      await ws.linear(`${p}.self_attn.q_proj`, c, c),
      await ws.linear(`${p}.self_attn.k_proj`, c, c),
      await ws.linear(`${p}.self_attn.v_proj`, c, c),
      await ws.linear(`${p}.self_attn.out_proj`, c, c),
      await ws.norm(`${p}.layer_norm2`, c),
      await ws.linear(`${p}.mlp.fc1`, f, c),
      await ws.linear(`${p}.mlp.fc2`, c, f),
      cfg.num_attention_heads,
      cfg.layer_norm_eps,
      act,
    );
  }

  /** x [B, L, C] → [B, L, C]. */
  forward(x: Tensor): Tensor {
    const eng = x.engine;
    const h = eng.scope(() => {
      const n = layerNorm(x, this.ln1.gamma, this.ln1.beta, this.eps);
      const a = attention(linear(n, this.q), linear(n, this.k), linear(n, this.v), this.heads, { causal: true });
      return add(x, linear(a, this.out));
    });
    const y = eng.scope(() => {
      const n = layerNorm(h, this.ln2.gamma, this.ln2.beta, this.eps);
      return add(h, linear(this.act(linear(n, this.fc1)), this.fc2));
    });
    h.free();
    return y;
  }
}

export class ClipTextModel {
  private constructor(
    readonly engine: Engine,
    readonly config: ClipTextConfig,
    /** [vocab, C] */
    private tokenEmbedding: Tensor,
    /** [max_positions, C] */
    private positionEmbedding: Tensor,
    private layers: ClipLayer[],
    private finalNorm: NormParams,
  ) {}

  get hiddenSize(): number {
    return this.config.hidden_size;
  }

  get maxLength(): number {
    return this.config.max_position_embeddings;
  }

  /** Builds the model of `config` from `weights` (names without the "text_model." prefix), or random weights. */
  static async fromConfig(eng: Engine, config: ClipTextConfig, weights: WeightStore | "random", seed = 0): Promise<ClipTextModel> {
    assertSupported(config as Record<string, any>, CLIP_TEXT_SUPPORTED);
    const ws = weights === "random" ? WeightStore.random(eng, seed) : weights;
    const c = config.hidden_size;
    const act = config.hidden_act === "quick_gelu" ? quickGelu : config.hidden_act === "gelu" ? gelu : null;
    if (!act) throw new Error(`text_encoder config: hidden_act ${JSON.stringify(config.hidden_act)} is not supported (quick_gelu, gelu)`);
    const tok = await ws.param("embeddings.token_embedding.weight", [config.vocab_size, c]);
    const pos = await ws.param("embeddings.position_embedding.weight", [config.max_position_embeddings, c]);
    const layers: ClipLayer[] = [];
    for (let i = 0; i < config.num_hidden_layers; i++) layers.push(await ClipLayer.load(ws, `encoder.layers.${i}`, config, act));
    return new ClipTextModel(eng, config, tok, pos, layers, await ws.norm("final_layer_norm", c));
  }

  /**
   * Encodes `batch` token sequences (ids row-major [batch, L], L ≤ max_position_embeddings, usually 77)
   * with the causal mask and position ids 0..L-1, like `CLIPTextModel(input_ids, output_hidden_states=True)`.
   * pooled takes each row's first eos_token_id position (argmax of the ids for legacy configs with
   * eos_token_id 2), as transformers does.
   */
  encode(ids: Int32Array | ArrayLike<number>, batch: number): ClipTextOutput {
    const eng = this.engine;
    const cfg = this.config;
    const c = cfg.hidden_size;
    if (!(Number.isInteger(batch) && batch > 0) || ids.length % batch !== 0)
      throw new Error(`ClipTextModel.encode: ${ids.length} ids do not split into ${batch} sequences`);
    const L = ids.length / batch;
    if (L < 1 || L > cfg.max_position_embeddings)
      throw new Error(`ClipTextModel.encode: sequence length ${L} is outside 1..${cfg.max_position_embeddings}`);
    for (let i = 0; i < ids.length; i++)
      if (!(Number.isInteger(ids[i]) && ids[i] >= 0 && ids[i] < cfg.vocab_size))
        throw new Error(`ClipTextModel.encode: token id ${ids[i]} at position ${i} is outside the vocabulary (0..${cfg.vocab_size - 1})`);

    return eng.scope(() => {
      // embeddings: gather token rows on the host view, then add the position embeddings (broadcast over B)
      const tokens = eng.empty([batch, L, c]);
      const dst = tokens.f32();
      const table = this.tokenEmbedding.f32();
      for (let i = 0; i < ids.length; i++) dst.set(table.subarray(ids[i] * c, ids[i] * c + c), i * c);
      const pos = L === cfg.max_position_embeddings ? this.positionEmbedding : new Tensor(eng, this.positionEmbedding.ptr, [L, c], "f32", this.positionEmbedding);
      let h = add(tokens, pos);
      tokens.free();

      // hidden_states[-2] is the input of the last layer (the embeddings when there is one layer)
      let penultimate = h;
      this.layers.forEach((layer, i) => {
        if (i === this.layers.length - 1) penultimate = h;
        const next = layer.forward(h);
        if (h !== penultimate) h.free();
        h = next;
      });
      const last = layerNorm(h, this.finalNorm.gamma, this.finalNorm.beta, cfg.layer_norm_eps);

      const pooled = eng.empty([batch, c]);
      const lastV = last.f32();
      const pv = pooled.f32();
      for (let b = 0; b < batch; b++) {
        const row = Array.prototype.slice.call(ids, b * L, (b + 1) * L) as number[];
        let pos: number;
        if (cfg.eos_token_id === 2 || cfg.eos_token_id === null) pos = row.indexOf(Math.max(...row));
        else {
          pos = row.indexOf(cfg.eos_token_id);
          if (pos < 0) pos = 0; // (ids == eos).argmax() of an all-false row
        }
        pv.set(lastV.subarray((b * L + pos) * c, (b * L + pos + 1) * c), b * c);
      }
      return { last, penultimate, pooled };
    });
  }
}
