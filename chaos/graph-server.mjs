// A misbehaving HTTP Identity Graph for scripts/chaos.
//
//   node chaos/graph-server.mjs --seed S [--port 0] [--token T]
//                               [--mix ok=89.7,500=5,429=0.3,400=2,hang=3] [--hang-ms 10000]
//
// `PUT /users/{id}` answers, at random (seeded): 200 (the user is
// acknowledged), 500, 429 with `Retry-After: 1`, 400, or nothing at all for
// --hang-ms (far past the app's IDENTITY_GRAPH_TIMEOUT_MS; the socket is then
// destroyed, so a hung request is never acknowledged).
//
// `GET /acked` lists every acknowledged user id, one per line (each id once);
// `GET /last` lists each user's last answer, `<id> <outcome>` per line
// (`ok`, `500`, `429`, `400` or `hang`; the answer to the latest PUT);
// `GET /stats` is JSON: requests per outcome, acknowledgements, and
// `overlaps`: a PUT for a user while another PUT for the same user was still
// open. One runner sends a user's attempts one after another, so an overlap
// means two runners were writing the same users at the same time.
// The first line on standard output is `listening <port>`.
import http from "node:http";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const token = args.token ?? "chaos-token";
const hangMs = Number(args["hang-ms"] ?? 10000);
const mix = (args.mix ?? "ok=89.7,500=5,429=0.3,400=2,hang=3").split(",").map((part) => {
  const [name, weight] = part.split("=");
  return [name, Number(weight)];
});
const totalWeight = mix.reduce((sum, [, w]) => sum + w, 0);

// mulberry32: a small seeded generator, so a seed replays the same answer sequence.
let state = Number(args.seed ?? 1) >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function pick() {
  let r = random() * totalWeight;
  for (const [name, weight] of mix) {
    if ((r -= weight) < 0) return name;
  }
  return mix[mix.length - 1][0];
}

const acked = new Map(); // user id → acknowledgements
const last = new Map(); // user id → the outcome picked for its latest PUT
const open = new Map(); // user id → requests still open
const outcomes = {};
let requests = 0;
let overlaps = 0;
const overlapIds = [];
let unauthorized = 0;

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") {
    res.writeHead(200).end("ok");
    return;
  }
  if (req.method === "GET" && req.url === "/acked") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end([...acked.keys()].join("\n") + (acked.size ? "\n" : ""));
    return;
  }
  if (req.method === "GET" && req.url === "/last") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end([...last].map(([id, outcome]) => `${id} ${outcome}\n`).join(""));
    return;
  }
  if (req.method === "GET" && req.url === "/stats") {
    let ackTotal = 0;
    for (const n of acked.values()) ackTotal += n;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        requests,
        outcomes,
        acked_unique: acked.size,
        acked_total: ackTotal,
        overlaps,
        overlap_ids: overlapIds.slice(0, 20),
        unauthorized,
      }),
    );
    return;
  }
  const match = req.method === "PUT" && req.url.match(/^\/users\/(\d+)$/);
  if (!match) {
    res.writeHead(404).end();
    return;
  }
  const id = match[1];
  requests += 1;
  const already = open.get(id) ?? 0;
  if (already > 0) {
    overlaps += 1;
    if (overlapIds.length < 1000) overlapIds.push(Number(id));
  }
  open.set(id, already + 1);
  let closed = false;
  const done = () => {
    if (closed) return;
    closed = true;
    const n = (open.get(id) ?? 1) - 1;
    if (n <= 0) open.delete(id);
    else open.set(id, n);
  };
  res.on("close", done);
  req.on("close", () => {
    if (!res.writableEnded) done();
  });
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    if (req.headers.authorization !== `Bearer ${token}`) {
      unauthorized += 1;
      last.set(id, "401");
      res.writeHead(401, { "content-type": "application/json" }).end('{"error":"bad token"}');
      return;
    }
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      body = null;
    }
    if (!body || String(body.user_id) !== id) {
      outcomes.bad_body = (outcomes.bad_body ?? 0) + 1;
      last.set(id, "422");
      res.writeHead(422, { "content-type": "application/json" }).end('{"error":"body does not match the path"}');
      return;
    }
    const outcome = pick();
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    last.set(id, outcome);
    switch (outcome) {
      case "ok":
        // Counted before the answer is written: a user the app saw as written
        // is always in /acked (the reverse may not hold: see docs/chaos.md).
        acked.set(id, (acked.get(id) ?? 0) + 1);
        res.writeHead(200, { "content-type": "application/json" }).end(`{"user_id":${id}}`);
        break;
      case "500":
        res.writeHead(500, { "content-type": "application/json" }).end('{"error":"chaos: internal error"}');
        break;
      case "429":
        res
          .writeHead(429, { "content-type": "application/json", "retry-after": "1" })
          .end('{"error":"chaos: slow down"}');
        break;
      case "400":
        res.writeHead(400, { "content-type": "application/json" }).end(`{"error":"chaos: user ${id} rejected"}`);
        break;
      case "hang":
      default:
        setTimeout(() => req.socket.destroy(), hangMs).unref();
        break;
    }
  });
});
server.keepAliveTimeout = 30000;
server.listen(Number(args.port ?? 0), "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
