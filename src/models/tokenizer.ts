// CLIP byte-level BPE tokenizer, producing the same ids as transformers' CLIPTokenizer (the
// tokenizers-backed one that diffusers loads for Stable Diffusion):
//   1. special tokens (<|startoftext|>, <|endoftext|>) written literally in the prompt are kept as is;
//   2. the rest is normalized: NFC, every whitespace run -> one space, lowercase (per code point);
//   3. split with the CLIP regex (letters runs, single digits, punctuation runs, 's 't 're 've 'm 'll 'd);
//   4. each piece -> UTF-8 bytes -> printable unicode chars (GPT-2 bytes_to_unicode);
//   5. BPE with the merges ranks, the last symbol of each piece carrying the "</w>" end-of-word suffix;
//   6. BOS + at most maxLength-2 tokens + EOS, padded to maxLength (77) with the pad id.
// SD 1.x pads with <|endoftext|> (49407); SD 2.x tokenizers have pad_token "!" (id 0), which transformers
// also treats as a special token inside prompts; pass the pad as a number to only change the padding.
// (transformers' legacy python path differs only for exotic input: it drops control characters and
// splits CJK ideographs into single characters; we follow the tokenizers backend, which the
// golden ids in ../shared/golden were computed with.)
import { folderExists, joinLocation, readText, SourceError, statLocation } from "../io/source.ts";
import { describeJsonError } from "../io/json.ts";

export const CLIP_BOS = "<|startoftext|>";
export const CLIP_EOS = "<|endoftext|>";
export const CLIP_MAX_LENGTH = 77;

export interface ClipTokenizerOptions {
  /**
   * Pad token, overriding tokenizer_config.json. A string (e.g. "!" or "<|endoftext|>") is, as in
   * transformers, also a special token: written in a prompt it is split out as that id (real SD 2.x
   * tokenizers turn every "!" into id 0, see diffusers issue #4153). A number only sets the padding id.
   */
  padToken?: string | number;
  /** Sequence length including BOS and EOS (default: model_max_length from the config, else 77). */
  maxLength?: number;
  bosToken?: string;
  eosToken?: string;
  unkToken?: string;
}

export interface EncodeOptions {
  /** Pad id for this call (overrides the tokenizer's pad id). */
  padId?: number;
  /** false: no padding, ids end with EOS. Default true. */
  padding?: boolean;
  maxLength?: number;
}

export interface EncodeResult {
  /** BOS, tokens, EOS, then padding: exactly maxLength (77) ids when padding. */
  ids: number[];
  /** True when the prompt had more than maxLength-2 tokens and was cut (the caller should warn). */
  truncated: boolean;
  /** Number of ids before padding (BOS + tokens + EOS). */
  length: number;
  /** Number of prompt tokens before truncation (without BOS/EOS). */
  promptTokens: number;
}

export class TokenizerError extends Error {}

/** GPT-2 / CLIP byte -> printable unicode char table. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table: string[] = new Array(256);
  for (const b of bs) table[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCodePoint(256 + n++);
  }
  return table;
}

// Unicode White_Space (what the Rust/Python `\s` matches; JS `\s` differs on U+0085 and U+FEFF).
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS}]+`, "gu");
/**
 * The CLIP pre-tokenizer pattern. transformers' python path compiles it case-insensitive, the tokenizers
 * backend does not; the input is lowercased first, so only exotic case-folding differs. We match the backend.
 */
export const CLIP_PATTERN = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`,
  "gu",
);

/** Normalization of the tokenizers backend: NFC, whitespace runs -> " ", per-char lowercase. */
export function normalizeClipText(text: string): string {
  const t = text.normalize("NFC").replace(WS_RUN, " ");
  let out = "";
  for (const ch of t) out += ch.toLowerCase(); // per code point, like Rust char::to_lowercase (no final-sigma rule)
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Tokenizer files are a few MB (CLIP's tokenizer.json: 3.6 MB); larger ones are refused. */
const MAX_TOKENIZER_FILE_BYTES = 64 * 1024 * 1024;

async function readTokenizerText(file: string): Promise<string> {
  try {
    return await readText(file, { maxBytes: MAX_TOKENIZER_FILE_BYTES, what: "a tokenizer file" });
  } catch (e) {
    throw e instanceof SourceError ? new TokenizerError(e.message) : e;
  }
}

async function readJson(file: string): Promise<any> {
  const text = await readTokenizerText(file);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${file}: invalid JSON (${describeJsonError(text, e)})`);
  }
}

/** A token in tokenizer_config.json / special_tokens_map.json: "str" or {content: "str", ...}. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as any).content === "string") return (v as any).content;
  return undefined;
}

export class ClipTokenizer {
  readonly vocab: Map<string, number>;
  readonly idToToken: string[] = [];
  readonly bpeRanks = new Map<string, number>();
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  padId: number;
  maxLength: number;
  readonly endOfWordSuffix: string;
  private readonly byteEncoder = bytesToUnicode();
  private readonly byteDecoder = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();
  /** Special tokens matched literally in the raw prompt, before normalization. */
  private readonly specialTokens = new Map<string, number>();
  private readonly specialSplit: RegExp;

  /**
   * @param vocab token -> id (vocab.json)
   * @param merges merge rules in rank order, each "a b" or [a, b] (merges.txt without its #version line)
   */
  constructor(
    vocab: Map<string, number> | Record<string, number>,
    merges: Array<string | [string, string]>,
    options: ClipTokenizerOptions & { endOfWordSuffix?: string; addedTokens?: Record<string, number> } = {},
  ) {
    this.vocab = vocab instanceof Map ? new Map(vocab) : new Map(Object.entries(vocab));
    for (const [tok, id] of Object.entries(options.addedTokens ?? {})) if (!this.vocab.has(tok)) this.vocab.set(tok, id);
    for (const [tok, id] of this.vocab) this.idToToken[id] = tok;
    for (const [k, v] of this.byteEncoder.entries()) this.byteDecoder.set(v, k);
    merges.forEach((m, i) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (pair.length !== 2) throw new TokenizerError(`merge rule ${i + 1} is not a pair: ${JSON.stringify(m)}`);
      const key = pair[0] + " " + pair[1];
      if (!this.bpeRanks.has(key)) this.bpeRanks.set(key, i);
    });
    this.endOfWordSuffix = options.endOfWordSuffix ?? "</w>";
    const id = (tok: string, what: string) => {
      const v = this.vocab.get(tok);
      if (v === undefined) throw new TokenizerError(`${what} token ${JSON.stringify(tok)} is not in the vocabulary`);
      return v;
    };
    const bos = options.bosToken ?? CLIP_BOS;
    const eos = options.eosToken ?? CLIP_EOS;
    this.bosId = id(bos, "bos");
    this.eosId = id(eos, "eos");
    this.unkId = id(options.unkToken ?? CLIP_EOS, "unk");
    const pad = options.padToken ?? CLIP_EOS;
    this.padId = typeof pad === "number" ? pad : id(pad, "pad");
    if (!Number.isInteger(this.padId) || this.padId < 0) throw new TokenizerError(`invalid pad id ${this.padId}`);
    this.maxLength = options.maxLength ?? CLIP_MAX_LENGTH;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new TokenizerError(`invalid maxLength ${this.maxLength}`);
    this.specialTokens.set(bos, this.bosId);
    this.specialTokens.set(eos, this.eosId);
    if (typeof pad === "string") this.specialTokens.set(pad, this.padId);
    const alts = [...this.specialTokens.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.specialSplit = new RegExp(`(${alts.join("|")})`, "u");
  }

  /**
   * Loads vocab.json + merges.txt from `dir`, or tokenizer.json when those are missing. Special tokens,
   * pad token and model_max_length come from tokenizer_config.json / special_tokens_map.json when present;
   * `options` override them.
   */
  static async fromDir(dir: string, options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    if (!(await folderExists(dir))) throw new TokenizerError(`${dir}: tokenizer folder not found`);
    const cfg: ClipTokenizerOptions = {};
    const mapFile = joinLocation(dir, "special_tokens_map.json");
    const cfgFile = joinLocation(dir, "tokenizer_config.json");
    for (const file of [mapFile, cfgFile]) {
      // tokenizer_config.json wins over special_tokens_map.json (read second)
      if ((await statLocation(file)).kind === "missing") continue;
      const j = await readJson(file);
      const pick = (k: string) => tokenString(j[k]);
      cfg.bosToken = pick("bos_token") ?? cfg.bosToken;
      cfg.eosToken = pick("eos_token") ?? cfg.eosToken;
      cfg.unkToken = pick("unk_token") ?? cfg.unkToken;
      cfg.padToken = pick("pad_token") ?? cfg.padToken;
      const ml = j.model_max_length;
      if (typeof ml === "number" && Number.isInteger(ml) && ml >= 2 && ml <= 4096) cfg.maxLength = ml;
    }
    const merged: ClipTokenizerOptions = { ...cfg };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) (merged as any)[k] = v;

    const vocabFile = joinLocation(dir, "vocab.json");
    const mergesFile = joinLocation(dir, "merges.txt");
    const tokJsonFile = joinLocation(dir, "tokenizer.json");
    if ((await statLocation(vocabFile)).kind !== "missing" && (await statLocation(mergesFile)).kind !== "missing") {
      const vocab = await readJson(vocabFile);
      if (!vocab || typeof vocab !== "object" || Array.isArray(vocab)) throw new TokenizerError(`${vocabFile}: not a token -> id object`);
      checkVocab(vocab, vocabFile);
      const text = await readTokenizerText(mergesFile);
      checkMergesTxt(text, mergesFile);
      return withFile(dir, () => new ClipTokenizer(vocab, parseMergesTxt(text), merged));
    }
    if ((await statLocation(tokJsonFile)).kind !== "missing") {
      const j = await readJson(tokJsonFile);
      const model = j.model;
      if (!model || model.type !== "BPE" || typeof model.vocab !== "object" || !Array.isArray(model.merges))
        throw new TokenizerError(`${tokJsonFile}: expected a BPE model with vocab and merges`);
      const added: Record<string, number> = {};
      for (const t of j.added_tokens ?? []) if (typeof t?.content === "string" && Number.isInteger(t?.id)) added[t.content] = t.id;
      checkVocab(model.vocab, `${tokJsonFile} (model.vocab)`);
      return withFile(`${tokJsonFile} (model.merges)`, () => new ClipTokenizer(model.vocab, model.merges, {
        ...merged,
        endOfWordSuffix: typeof model.end_of_word_suffix === "string" ? model.end_of_word_suffix : "</w>",
        addedTokens: added,
      }));
    }
    throw new TokenizerError(`${dir}: no vocab.json + merges.txt and no tokenizer.json`);
  }

  /** BPE of one pre-tokenized piece (already byte-encoded): its list of vocab tokens. */
  bpe(piece: string): string[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    const chars = Array.from(piece);
    let word: string[] = chars.slice(0, -1);
    word.push(chars[chars.length - 1] + this.endOfWordSuffix);
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.bpeRanks.get(word[i] + " " + word[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      // merge every occurrence of the pair, left to right
      const next: string[] = [];
      let i = 0;
      while (i < word.length) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else {
          next.push(word[i]);
          i += 1;
        }
      }
      word = next;
    }
    if (this.cache.size > 100_000) this.cache.clear();
    this.cache.set(piece, word);
    return word;
  }

  /** BPE tokens of a prompt (no BOS/EOS). Special tokens written in the prompt come out as themselves. */
  tokenize(text: string): string[] {
    const out: string[] = [];
    const parts = text.split(this.specialSplit);
    for (let p = 0; p < parts.length; p++) {
      const part = parts[p];
      if (p % 2 === 1) {
        out.push(part);
        continue;
      }
      if (!part) continue;
      const norm = normalizeClipText(part);
      for (const m of norm.matchAll(CLIP_PATTERN)) {
        let enc = "";
        for (const b of utf8(m[0])) enc += this.byteEncoder[b];
        for (const t of this.bpe(enc)) out.push(t);
      }
    }
    return out;
  }

  /** Ids of a prompt without BOS/EOS/padding and without truncation. */
  tokenIds(text: string): number[] {
    return this.tokenize(text).map((t) => this.vocab.get(t) ?? this.unkId);
  }

  /** BOS + up to maxLength-2 prompt tokens + EOS, padded to maxLength (77). */
  encode(prompt: string, options: EncodeOptions = {}): EncodeResult {
    const maxLength = options.maxLength ?? this.maxLength;
    const padId = options.padId ?? this.padId;
    const toks = this.tokenIds(prompt);
    const room = maxLength - 2;
    const truncated = toks.length > room;
    const ids = [this.bosId, ...(truncated ? toks.slice(0, room) : toks), this.eosId];
    const length = ids.length;
    if (options.padding !== false) while (ids.length < maxLength) ids.push(padId);
    return { ids, truncated, length, promptTokens: toks.length };
  }

  /** Text of ids (special tokens and padding after EOS skipped unless keepSpecial). For logs and debugging. */
  decode(ids: ArrayLike<number>, keepSpecial = false): string {
    const bytes: number[] = [];
    const specialIds = new Set(this.specialTokens.values());
    let text = "";
    const flush = () => {
      text += new TextDecoder().decode(new Uint8Array(bytes));
      bytes.length = 0;
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const tok = this.idToToken[id];
      if (tok === undefined) continue;
      if (specialIds.has(id)) {
        if (keepSpecial) {
          flush();
          text += tok;
        }
        if (!keepSpecial && id === this.eosId) break;
        continue;
      }
      let t = tok;
      let space = false;
      if (this.endOfWordSuffix && t.endsWith(this.endOfWordSuffix)) {
        t = t.slice(0, -this.endOfWordSuffix.length);
        space = true;
      }
      for (const ch of t) {
        const b = this.byteDecoder.get(ch);
        if (b !== undefined) bytes.push(b);
      }
      if (space) bytes.push(0x20);
    }
    flush();
    return text.trim();
  }
}

const textEncoder = new TextEncoder();
function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

/** merges.txt: "#version" header line, then "a b" per line; as transformers, at most 49152-256-2 rules. */
/** Vocabularies larger than this are not CLIP's (49408); ids beyond it are a damaged file. */
const MAX_VOCAB_ID = 10_000_000;

/** Every vocab entry maps a token to a non-negative integer id (else an error naming the file and token). */
function checkVocab(vocab: Record<string, unknown>, label: string): void {
  for (const [tok, id] of Object.entries(vocab))
    if (!(typeof id === "number" && Number.isInteger(id) && id >= 0 && id < MAX_VOCAB_ID))
      throw new TokenizerError(`${label}: token ${JSON.stringify(tok.slice(0, 40))} has id ${JSON.stringify(id)}, expected an integer from 0 to ${MAX_VOCAB_ID - 1}`);
}

/** Each merges.txt line parseMergesTxt uses is "a b" (else an error naming the file and line). */
function checkMergesTxt(text: string, file: string): void {
  // the lines parseMergesTxt reads, numbered as in the file
  const lead = text.length - text.trimStart().length;
  const firstLine = text.slice(0, lead).split("\n").length;
  const lines = text.trim().split("\n");
  const start = lines[0]?.startsWith("#version") ? 1 : 0;
  for (let i = start; i < Math.min(lines.length, start + MERGES_USED); i++) {
    const l = lines[i].replace(/\r$/, "");
    if (l.length > 0 && l.split(" ").length !== 2)
      throw new TokenizerError(`${file}: line ${firstLine + i} is not a merge rule "a b": ${JSON.stringify(l.slice(0, 60))}`);
  }
}

/** Runs the tokenizer constructor, naming `label` (the file or folder) in its errors. */
function withFile<T>(label: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    throw e instanceof TokenizerError ? new TokenizerError(`${label}: ${e.message}`) : e;
  }
}

/** CLIP uses the first 49152 - 256 - 2 merge rules (the vocabulary minus bytes and the two special tokens). */
const MERGES_USED = 49152 - 256 - 2;

export function parseMergesTxt(text: string): string[] {
  const lines = text.trim().split("\n");
  const start = lines[0]?.startsWith("#version") ? 1 : 0;
  return lines
    .slice(start, start + MERGES_USED)
    .map((l) => l.replace(/\r$/, ""))
    .filter((l) => l.length > 0);
}
