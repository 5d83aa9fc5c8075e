// An HTTP Identity Graph for the end-to-end suite: accepts every user except
// those whose id is a multiple of 7, which it rejects with a 400, and the
// other multiples of 11, which it rejects with a 422.
//
// It is also the suite's notification receiver (NOTIFY_WEBHOOK_URL, on both
// app replicas): `POST /webhook` answers 500 to the first attempt of each
// event (by X-Notification-Id), so every event shows a retry, then 200.
import http from "node:http";

const counts = new Map();
const webhookAttempts = new Map();
const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200).end("ok");
    return;
  }
  if (req.method === "POST" && req.url === "/webhook") {
    const id = String(req.headers["x-notification-id"]);
    const attempt = (webhookAttempts.get(id) ?? 0) + 1;
    webhookAttempts.set(id, attempt);
    req.resume();
    req.on("end", () => res.writeHead(attempt === 1 ? 500 : 200).end());
    return;
  }
  const match = req.method === "PUT" && req.url.match(/^\/users\/(\d+)$/);
  if (!match) {
    res.writeHead(404).end();
    return;
  }
  const id = Number(match[1]);
  counts.set(id, (counts.get(id) ?? 0) + 1);
  req.resume();
  req.on("end", () => {
    if (req.headers.authorization !== "Bearer e2e-token") {
      res.writeHead(401, { "content-type": "application/json" }).end('{"error":"bad token"}');
    } else if (id % 7 === 0) {
      res.writeHead(400, { "content-type": "application/json" }).end(`{"error":"user ${id} rejected: identifiers failed validation"}`);
    } else if (id % 11 === 0) {
      res.writeHead(422, { "content-type": "application/json" }).end(`{"error":"user ${id} rejected: unknown device"}`);
    } else {
      res.writeHead(204).end();
    }
  });
});
server.listen(Number(process.argv[2] ?? 3199), "127.0.0.1");
