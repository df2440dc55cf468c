// Runs an ONNX graph in onnxruntime-node in a plain Node process (jest's sandbox has its own typed
// array classes, which onnxruntime-node's native binding rejects). Reads {model, feeds} as JSON on
// stdin (feeds: name -> {dims, data} of int64 values) and writes {inputs, outputs: name -> {dims, data}}.
const ort = require('onnxruntime-node');

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const req = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const s = await ort.InferenceSession.create(req.model);
  const feeds = {};
  for (const [name, f] of Object.entries(req.feeds)) {
    if (s.inputNames.includes(name)) feeds[name] = new ort.Tensor('int64', BigInt64Array.from(f.data.map((v) => BigInt(v))), f.dims);
  }
  const r = await s.run(feeds);
  const outputs = {};
  for (const [k, t] of Object.entries(r)) outputs[k] = { dims: t.dims, data: Array.from(t.data, Number) };
  process.stdout.write(JSON.stringify({ inputs: s.inputNames, outputs }));
}
main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e));
  process.exit(1);
});
