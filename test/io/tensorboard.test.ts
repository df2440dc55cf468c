/**
 * TensorBoard event files: CRC32C and its mask, the TFRecord framing, the Event/Summary wire format
 * (field numbers checked with a hand-written protobuf walker, independent of the .proto), and a
 * training run with reportTo 'tensorboard' whose file holds, as the run goes, every logged step's
 * loss, learning rate, gradient norm and tokens/s, and the eval metrics; the CLI flag.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { createByteTokenizer } from '../../lib/tokenizers';
import { Trainer } from '../../lib/train/trainer';
import type { Row, TrainerEvent } from '../../lib/train/types';
import { EventFileWriter, crc32c, maskedCrc32c, readEventFile, tfRecord } from '../../lib/io/tensorboard';
import { SiftError } from '../../lib/engine/errors';
import { main } from '../../lib/cli/main';
import { writeJsonl } from '../helpers/cli';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-tb-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Fields of one protobuf message: [field number, wire type, value (number, bigint or bytes)]. */
function fields(b: Uint8Array): [number, number, number | bigint | Uint8Array][] {
  const out: [number, number, number | bigint | Uint8Array][] = [];
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    let s = 0n;
    for (;;) {
      const x = b[i++];
      v |= BigInt(x & 0x7f) << s;
      if (!(x & 0x80)) return v;
      s += 7n;
    }
  };
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  while (i < b.length) {
    const key = Number(varint());
    const f = key >> 3;
    const w = key & 7;
    if (w === 0) out.push([f, w, varint()]);
    else if (w === 1) {
      out.push([f, w, dv.getFloat64(i, true)]);
      i += 8;
    } else if (w === 5) {
      out.push([f, w, dv.getFloat32(i, true)]);
      i += 4;
    } else if (w === 2) {
      const n = Number(varint());
      out.push([f, w, b.subarray(i, i + n)]);
      i += n;
    } else throw new Error(`wire type ${w}`);
  }
  return out;
}

/** The records' payloads of an event file, framing checked by hand. */
function records(file: string): Uint8Array[] {
  const buf = fs.readFileSync(file);
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < buf.length) {
    const len = Number(buf.readBigUInt64LE(off));
    expect(buf.readUInt32LE(off + 8)).toBe(maskedCrc32c(buf.subarray(off, off + 8)));
    const data = buf.subarray(off + 12, off + 12 + len);
    expect(buf.readUInt32LE(off + 12 + len)).toBe(maskedCrc32c(data));
    out.push(data);
    off += 16 + len;
  }
  return out;
}

describe('event file format', () => {
  test("CRC-32C check value and TFRecord's mask", () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    const c = crc32c(Buffer.from('abc'));
    expect(maskedCrc32c(Buffer.from('abc'))).toBe(((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  });

  test("records: u64 length, masked CRCs, Event fields with TensorFlow's numbers", () => {
    const dir = path.join(tmp, 'fmt');
    const w = new EventFileWriter(dir, { time: 1700000000, host: 'my host' });
    expect(path.basename(w.file)).toBe('events.out.tfevents.1700000000.my_host');
    w.scalars(7, { 'train/loss': 1.5, 'train/learning_rate': 3e-4 }, 1700000001.25);
    w.close();
    const recs = records(w.file);
    expect(recs.length).toBe(2);
    // Event { wall_time = 1 (double); file_version = 3 (string) }
    const first = fields(recs[0]);
    expect(first.find(([f]) => f === 1)?.[1]).toBe(1);
    const fv = first.find(([f]) => f === 3)!;
    expect(fv[1]).toBe(2);
    expect(Buffer.from(fv[2] as Uint8Array).toString()).toBe('brain.Event:2');
    // Event { wall_time = 1; step = 2 (varint); summary = 5 { value = 1 { tag = 1; simple_value = 2 (float) } } }
    const second = fields(recs[1]);
    expect(second.find(([f]) => f === 1)![2]).toBe(1700000001.25);
    expect(second.find(([f]) => f === 2)![2]).toBe(7n);
    const summary = fields(second.find(([f]) => f === 5)![2] as Uint8Array);
    const values = summary.filter(([f]) => f === 1).map(([, , v]) => fields(v as Uint8Array));
    expect(values.map((v) => Buffer.from(v.find(([f]) => f === 1)![2] as Uint8Array).toString())).toEqual([
      'train/loss',
      'train/learning_rate',
    ]);
    expect(values.map((v) => v.find(([f]) => f === 2)).map((x) => [x![1], x![2]])).toEqual([
      [5, 1.5],
      [5, Math.fround(3e-4)],
    ]);
    const back = readEventFile(w.file);
    expect(back.fileVersion).toBe('brain.Event:2');
    expect(back.scalars).toEqual([
      { wallTime: 1700000001.25, step: 7, tag: 'train/loss', value: 1.5 },
      { wallTime: 1700000001.25, step: 7, tag: 'train/learning_rate', value: Math.fround(3e-4) },
    ]);
  });

  test('a damaged record is E_FORMAT', () => {
    const w = new EventFileWriter(path.join(tmp, 'bad'), { time: 1 });
    w.scalars(1, { a: 1 });
    w.close();
    const buf = fs.readFileSync(w.file);
    buf[buf.length - 6] ^= 0xff;
    fs.writeFileSync(w.file, buf);
    expect(() => readEventFile(w.file)).toThrow(SiftError);
    expect(() => readEventFile(w.file)).toThrow(/CRC/);
    expect(tfRecord(new Uint8Array(0)).length).toBe(16);
  });
});

describe('reportTo tensorboard', () => {
  const rows: Row[] = Array.from({ length: 24 }, (_, i) => ({ input_ids: [4 + (i % 5), 5 + (i % 3), 2 + (i % 2)], label: i % 2 }));

  test('the trainer writes every logged step and eval as it goes', async () => {
    const model = createModel(
      {
        model_type: 'gpt2',
        vocab_size: 12,
        n_positions: 16,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        num_labels: 2,
        pad_token_id: 0,
        embd_pdrop: 0,
        attn_pdrop: 0,
        resid_pdrop: 0,
      },
      { task: 'sequence-classification', seed: 1 },
    );
    const out = path.join(tmp, 'run');
    const t = new Trainer(model, null, {
      task: 'classify',
      method: 'sift',
      sift: { sparseRate: 0.1 },
      steps: 6,
      batchSize: 4,
      lr: 1e-2,
      seed: 1,
      evalEvery: 3,
      outDir: out,
      reportTo: 'tensorboard',
      maxGradNorm: 1,
    });
    const steps: Extract<TrainerEvent, { type: 'step' }>[] = [];
    const evals: Extract<TrainerEvent, { type: 'eval' }>[] = [];
    try {
      for await (const e of t.fit(rows, rows.slice(0, 8))) {
        const files = fs.readdirSync(out).filter((f) => f.startsWith('events.out.tfevents.'));
        expect(files.length).toBe(1);
        if (e.type === 'step') {
          steps.push(e);
          // Written before the event reaches the consumer: a live `tensorboard --logdir` sees it.
          const now = readEventFile(path.join(out, files[0]))
            .scalars.filter((s) => s.tag === 'train/loss')
            .map((s) => s.step);
          expect(now[now.length - 1]).toBe(e.step);
        }
        if (e.type === 'eval') evals.push(e);
      }
    } finally {
      t.dispose();
      model.dispose();
    }
    const file = fs.readdirSync(out).find((f) => f.startsWith('events.out.tfevents.'))!;
    expect(file).toMatch(
      new RegExp(
        `^events\\.out\\.tfevents\\.\\d{10}\\.${os
          .hostname()
          .replace(/[^A-Za-z0-9_.-]/g, '_')
          .replace(/\./g, '\\.')}$`,
      ),
    );
    expect(fs.existsSync(path.join(out, 'log.jsonl'))).toBe(true);
    const { scalars, fileVersion } = readEventFile(path.join(out, file));
    expect(fileVersion).toBe('brain.Event:2');
    const series = (tag: string) => scalars.filter((s) => s.tag === tag).map((s) => [s.step, s.value]);
    expect(series('train/loss')).toEqual(steps.map((e) => [e.step, Math.fround(e.loss)]));
    expect(series('train/learning_rate')).toEqual(steps.map((e) => [e.step, Math.fround(e.lr)]));
    expect(series('train/grad_norm')).toEqual(steps.map((e) => [e.step, Math.fround(e.gradNorm!)]));
    expect(series('train/tokens_per_second')).toEqual(steps.map((e) => [e.step, Math.fround(e.tokensPerSec)]));
    expect(steps.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(evals.map((e) => e.step)).toEqual([3, 6]);
    expect(series('eval/accuracy')).toEqual(evals.map((e) => [e.step, Math.fround(e.metrics.accuracy!)]));
    expect(series('eval/loss')).toEqual(evals.map((e) => [e.step, Math.fround(e.metrics.loss!)]));
    expect(series('sift/trainable_parameters').length).toBe(1);
  });

  test('without outDir, or with an unknown destination, it is E_ARG', async () => {
    const model = createModel(
      { model_type: 'gpt2', vocab_size: 12, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2, num_labels: 2, pad_token_id: 0 },
      { task: 'sequence-classification', seed: 1 },
    );
    try {
      for (const opts of [{ reportTo: 'tensorboard' as const }, { reportTo: 'wandb' as never, outDir: path.join(tmp, 'x') }]) {
        const t = new Trainer(model, null, { task: 'classify', method: 'full', steps: 1, batchSize: 4, ...opts });
        await expect(
          (async () => {
            for await (const e of t.fit(rows)) void e;
          })(),
        ).rejects.toMatchObject({ code: 'E_ARG' });
        t.dispose();
      }
    } finally {
      model.dispose();
    }
  });

  test('sift-ft finetune --report-to tensorboard', async () => {
    const tok = createByteTokenizer();
    const m = createModel(
      {
        model_type: 'gpt2',
        vocab_size: tok.vocabSize,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        n_positions: 32,
        n_inner: 32,
        eos_token_id: tok.eosTokenId,
        bos_token_id: tok.bosTokenId,
        pad_token_id: tok.padTokenId,
      },
      { task: 'causal-lm', seed: 2 },
    );
    const base = path.join(tmp, 'base');
    saveModelFolder(base, { config: m.config, stateDict: stateDict(m), tokenizerFiles: tok.toFiles() });
    m.dispose();
    const data = writeJsonl(
      path.join(tmp, 'lm.jsonl'),
      ['the cat sat', 'a dog ran', 'birds sing', 'fish swim'].map((text) => ({ text })),
    );
    const out = path.join(tmp, 'cli-run');
    const quiet = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const stdout = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(
        await main([
          'finetune',
          '--model',
          base,
          '--data',
          data,
          '--task',
          'causal-lm',
          '--out',
          out,
          '--steps',
          '3',
          '--batch-size',
          '2',
          '--report-to',
          'tensorboard',
          '--quiet',
        ]),
      ).toBe(0);
      expect(
        await main([
          'finetune',
          '--model',
          base,
          '--data',
          data,
          '--task',
          'causal-lm',
          '--out',
          out,
          '--steps',
          '3',
          '--report-to',
          'mlflow',
        ]),
      ).toBe(2);
    } finally {
      quiet.mockRestore();
      stdout.mockRestore();
    }
    const file = fs.readdirSync(out).find((f) => f.startsWith('events.out.tfevents.'))!;
    expect(
      readEventFile(path.join(out, file))
        .scalars.filter((s) => s.tag === 'train/loss')
        .map((s) => s.step),
    ).toEqual([1, 2, 3]);
  });
});
