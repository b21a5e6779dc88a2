// Kernel worker (plain JS so Node, Deno and browsers load it unbundled). It instantiates the kernel
// module on the shared memory, then loops: spin briefly on the job counter, else Atomics.wait; run its
// share (tid of nt) of the posted kernel; count itself done. Errors are written to shared memory so the
// caller's (synchronous) run() can throw them and the pool stays usable.
const SEQ = 0, KERNEL = 1, NARGS = 2, DONE = 3, ERR = 4, NT = 5, QUIT = 6;
const SPINS = 4000;

function start(init, reply) {
  const { module, memory, ctrlBuf, argsBuf, errBuf, tid, names } = init;
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const fns = names.map((n) => instance.exports[n]);
  const ctrl = new Int32Array(ctrlBuf);
  const args = new Float64Array(argsBuf);
  const err = new Uint8Array(errBuf);
  // read the job counter before saying ready: a job posted right after "ready" must look new
  let seen = Atomics.load(ctrl, SEQ);
  reply("ready");
  for (;;) {
    let s, spins = 0;
    while ((s = Atomics.load(ctrl, SEQ)) === seen) {
      if (++spins > SPINS) { Atomics.wait(ctrl, SEQ, seen); spins = 0; }
    }
    seen = s;
    if (Atomics.load(ctrl, QUIT)) break;
    const nt = Atomics.load(ctrl, NT);
    if (tid < nt) {
      const fn = fns[Atomics.load(ctrl, KERNEL)];
      const a = Array.prototype.slice.call(args, 0, Atomics.load(ctrl, NARGS));
      try {
        fn(tid, nt, ...a);
      } catch (e) {
        if (Atomics.compareExchange(ctrl, ERR, 0, tid + 1) === 0) {
          const msg = new TextEncoder().encode(String((e && e.message) || e).slice(0, 900));
          err.fill(0);
          err.set(msg);
        }
      }
      if (Atomics.add(ctrl, DONE, 1) + 1 === nt - 1) Atomics.notify(ctrl, DONE);
    }
  }
}

const isNode = typeof process !== "undefined" && process.versions && process.versions.node && typeof self === "undefined";
if (isNode) {
  const { parentPort, workerData } = await import("node:worker_threads");
  start(workerData, (m) => parentPort.postMessage(m));
} else {
  self.onmessage = (ev) => {
    self.onmessage = null;
    start(ev.data, (m) => self.postMessage(m));
  };
}
