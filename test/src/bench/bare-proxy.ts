/**
 * The floor: a bare pass-through proxy (node:http in, undici Pool out, body
 * and stream passed through, no routing, limits, tracing or usage). With
 * BENCH_PROXY=bare the bench measures it in keymesh's place, so the share of
 * keymesh's cost that is Node's HTTP on both sides, and the latency that is
 * this machine's scheduling, can be told apart from keymesh's own.
 *
 * Started as `bare-proxy.js up --config FILE` like `keymesh up`; reads the
 * provider URL and the first key from the bench's config and prints the same
 * ready line.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Pool } from "undici";

function main(): void {
  const configIndex = process.argv.indexOf("--config");
  const config = readFileSync(process.argv[configIndex + 1], "utf8");
  const baseUrl = /base_url: (\S+) /.exec(config)?.[1];
  const secret = /secret: (\S+) /.exec(config)?.[1];
  if (baseUrl === undefined || secret === undefined) throw new Error("bare proxy: the config names no base_url or secret");
  const base = new URL(baseUrl);
  const upstreamPath = `${base.pathname.replace(/\/$/, "")}/chat/completions`;
  const pool = new Pool(base.origin, { connections: 256, pipelining: 1 });
  const headers = { "content-type": "application/json", authorization: `Bearer ${secret}` };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      pool
        .request({ method: "POST", path: upstreamPath, headers, body: Buffer.concat(chunks) })
        .then(async (upstream) => {
          res.writeHead(upstream.statusCode, { "content-type": String(upstream.headers["content-type"] ?? "application/json") });
          for await (const chunk of upstream.body) res.write(chunk);
          res.end();
        })
        .catch((err: unknown) => {
          if (!res.headersSent) res.writeHead(502);
          res.end(String(err));
        });
    });
  });
  server.listen(Number(process.env["KEYMESH_HTTP_PORT"]), "127.0.0.1", () => process.stdout.write("keymesh is up (bare proxy, BENCH_PROXY=bare)\n"));
  const stop = (): void => {
    server.close();
    void pool.close().finally(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main();
