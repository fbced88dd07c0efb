// Start the PeerJS server (npm package `peer`, installed by bench/run.py into bench/.work/peerjs) the way its
// own `peerjs` command does -- PeerServer() with its defaults -- minus the command's console.log for every
// connection and disconnection (peercall runs with its access log off too). Prints "listening on HOST:PORT".
//
//   node bench/peerjs_server.mjs [--port 0] [--concurrent-limit 100000]

import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.PEERCALL_BENCH_PEERJS || path.join(here, ".work", "peerjs");
const { PeerServer } = await import(pathToFileURL(path.join(modules, "node_modules", "peer", "dist", "module.mjs")).href);

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};

const server = PeerServer(
  {
    host: "127.0.0.1",
    port: Number(arg("--port", "0")),
    path: "/",
    concurrent_limit: Number(arg("--concurrent-limit", "100000")),
  },
  (http) => {
    const { address, port } = http.address();
    console.log(`peerjs listening on ${address}:${port}`);
    const stop = () => http.close(() => process.exit(0));
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    // close() waits for open sockets; do not wait for ever
    process.on("SIGTERM", () => setTimeout(() => process.exit(0), 2000).unref());
  },
);
server.on("error", (err) => console.error(`peerjs error: ${err}`));
