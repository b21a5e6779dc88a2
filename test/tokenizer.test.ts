import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ClipTokenizer, TokenizerError, bytesToUnicode, normalizeClipText, parseMergesTxt } from "../src/models/tokenizer.ts";
import { sharedDir } from "../src/io/places.ts";
import { parsePythonJson } from "../src/io/json.ts";

const shared = sharedDir();
const goldenTokDir = path.join(shared, "golden", "tokenizer");
const fashionTokDir = path.join(shared, "models", "fashion-sd-tiny", "tokenizer");
// cases.json is written by Python's json module and holds bare -Infinity in scheduler configs
const cases: { prompt: string; sd1_input_ids: number[]; sd2_input_ids: number[] }[] = parsePythonJson(
  fs.readFileSync(path.join(shared, "golden", "cases.json"), "utf8"),
).cases.filter((c: any) => c.kind === "tokenizer");

// tokenizers load asynchronously (through the byte source): load them once, at the top level
const tokenizers = {
  golden: await ClipTokenizer.fromDir(goldenTokDir),
  goldenSd2: await ClipTokenizer.fromDir(goldenTokDir, { padToken: 0 }),
  fashion: await ClipTokenizer.fromDir(fashionTokDir),
  fashionSd2: await ClipTokenizer.fromDir(fashionTokDir, { padToken: 0 }),
};

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "stepq-tok-"));
}

describe("ClipTokenizer golden cases", () => {
  it("has the 48 tokenizer cases", async () => {
    expect(cases.length).toBe(48);
  });

  for (const [label, tok, sd2] of [
    ["golden/tokenizer", tokenizers.golden, tokenizers.goldenSd2],
    ["fashion-sd-tiny/tokenizer", tokenizers.fashion, tokenizers.fashionSd2],
  ] as const) {
    // sd2: the golden SD 2.x ids pad with id 0 but tokenize "!" normally: pad id only
    it(`${label}: SD1 ids (pad <|endoftext|>) and SD2 ids (pad id 0) match transformers`, async () => {
      expect(tok.padId).toBe(49407);
      expect(sd2.padId).toBe(0);
      for (const c of cases) {
        const r1 = tok.encode(c.prompt);
        expect(r1.ids, c.prompt).toEqual(c.sd1_input_ids);
        expect(sd2.encode(c.prompt).ids, c.prompt).toEqual(c.sd2_input_ids);
        expect(tok.encode(c.prompt, { padId: 0 }).ids, c.prompt).toEqual(c.sd2_input_ids);
        expect(r1.ids.length).toBe(77);
        expect(r1.truncated).toBe(r1.promptTokens > 75);
      }
    });
  }

  it("tokenizer.json alone gives the same ids as vocab.json + merges.txt", async () => {
    const d = tmpDir();
    fs.copyFileSync(path.join(goldenTokDir, "tokenizer.json"), path.join(d, "tokenizer.json"));
    const tok = await ClipTokenizer.fromDir(d);
    for (const c of cases) expect(tok.encode(c.prompt).ids, c.prompt).toEqual(c.sd1_input_ids);
    const sd2 = await ClipTokenizer.fromDir(d, { padToken: 0 });
    for (const c of cases) expect(sd2.encode(c.prompt).ids, c.prompt).toEqual(c.sd2_input_ids);
  });
});

describe("ClipTokenizer behaviour", () => {
  const tok = tokenizers.golden;

  it("BOS/EOS and simple words", async () => {
    const r = tok.encode("a photo of a cat");
    expect(r.ids.slice(0, 7)).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
    expect(r.length).toBe(7);
    expect(r.truncated).toBe(false);
    expect(tok.tokenize("a photo")).toEqual(["a</w>", "photo</w>"]);
  });

  it("empty and whitespace-only prompts give BOS EOS", async () => {
    for (const p of ["", "   ", "\n\t "]) {
      const r = tok.encode(p);
      expect(r.ids.slice(0, 3)).toEqual([49406, 49407, 49407]);
      expect(r.length).toBe(2);
    }
  });

  it("truncates to 75 tokens and reports it", async () => {
    const long = Array(100).fill("word").join(" ");
    const r = tok.encode(long);
    expect(r.truncated).toBe(true);
    expect(r.promptTokens).toBe(100);
    expect(r.ids.length).toBe(77);
    expect(r.ids[76]).toBe(49407);
    const exact = tok.encode(Array(75).fill("word").join(" "));
    expect(exact.truncated).toBe(false);
    expect(exact.ids[76]).toBe(49407);
    expect(tok.encode(Array(76).fill("word").join(" ")).truncated).toBe(true);
  });

  it("padding can be turned off", async () => {
    const r = tok.encode("a cat", { padding: false });
    expect(r.ids).toEqual([49406, 320, 2368, 49407]);
  });

  it("whitespace, case and NFC normalization", async () => {
    expect(tok.encode("A   Photo\tOF\na cat").ids).toEqual(tok.encode("a photo of a cat").ids);
    // "cafe\u0301" (decomposed) equals "café" after NFC
    expect(tok.encode("cafe\u0301").ids).toEqual(tok.encode("café").ids);
    expect(normalizeClipText("  Hello\u00a0\u3000World  ")).toBe(" hello world ");
  });

  it("special tokens written in the prompt are kept", async () => {
    expect(tok.encode("a <|endoftext|> cat", { padding: false }).ids).toEqual([49406, 320, 49407, 2368, 49407]);
  });

  it("decode inverts encode up to normalization", async () => {
    expect(tok.decode(tok.encode("Hello, WORLD!! It's café 東京 😀").ids)).toBe("hello , world !! it 's café 東京 😀");
  });

  it("bytes_to_unicode is the GPT-2 table", async () => {
    const t = bytesToUnicode();
    expect(t.length).toBe(256);
    expect(new Set(t).size).toBe(256);
    expect(t[0x21]).toBe("!");
    expect(t[0x20]).toBe("Ġ");
    expect(t[0x0a]).toBe("Ċ");
    expect(t[0xad]).toBe("Ń");
  });

  it("merges.txt parsing skips the version line", async () => {
    expect(parseMergesTxt("#version: 0.2\ni n\nt h\n")).toEqual(["i n", "t h"]);
  });

  it("reads pad_token from tokenizer_config.json (SD 2.x uses \"!\")", async () => {
    const d = tmpDir();
    for (const f of ["vocab.json", "merges.txt"]) fs.copyFileSync(path.join(goldenTokDir, f), path.join(d, f));
    fs.writeFileSync(
      path.join(d, "tokenizer_config.json"),
      JSON.stringify({ pad_token: { content: "!", __type: "AddedToken" }, model_max_length: 77 }),
    );
    const t = await ClipTokenizer.fromDir(d);
    expect(t.padId).toBe(0);
    expect(t.encode("a cat").ids.slice(3, 6)).toEqual([49407, 0, 0]);
    // as in transformers (diffusers issue #4153), the "!" pad token is special: split out of prompts
    expect(t.encode("! !! !!!").ids.slice(0, 9)).toEqual([49406, 0, 0, 0, 0, 0, 0, 49407, 0]);
    expect(t.decode(t.encode("a cat!").ids)).toBe("a cat");
    // a per-call pad id only pads
    const plain = await ClipTokenizer.fromDir(goldenTokDir);
    expect(plain.encode("!!!", { padId: 0 }).ids.slice(0, 4)).toEqual([49406, plain.vocab.get("!!!</w>"), 49407, 0]);
    // explicit override wins
    expect((await ClipTokenizer.fromDir(d, { padToken: "<|endoftext|>" })).padId).toBe(49407);
    // special_tokens_map.json alone
    fs.rmSync(path.join(d, "tokenizer_config.json"));
    fs.writeFileSync(path.join(d, "special_tokens_map.json"), JSON.stringify({ pad_token: "!" }));
    expect((await ClipTokenizer.fromDir(d)).padId).toBe(0);
  });

  it("clear errors for missing or broken files", async () => {
    const d = tmpDir();
    await expect(ClipTokenizer.fromDir(path.join(d, "nope"))).rejects.toThrow(/tokenizer folder not found/);
    await expect(ClipTokenizer.fromDir(d)).rejects.toThrow(/no vocab.json \+ merges.txt and no tokenizer.json/);
    fs.writeFileSync(path.join(d, "vocab.json"), "{oops");
    fs.writeFileSync(path.join(d, "merges.txt"), "#version: 0.2\n");
    await expect(ClipTokenizer.fromDir(d)).rejects.toThrow(TokenizerError);
    await expect(ClipTokenizer.fromDir(d)).rejects.toThrow(/vocab\.json: invalid JSON/);
    fs.writeFileSync(path.join(d, "vocab.json"), JSON.stringify({ a: 0 }));
    await expect(ClipTokenizer.fromDir(d)).rejects.toThrow(/bos token "<\|startoftext\|>" is not in the vocabulary/);
  });
});
