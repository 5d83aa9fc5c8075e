#!/usr/bin/env node
// Prints the biggest contributors to a WASM file's code, by crate and by
// function, from its `name` section. Feed it a file that still has names:
// the linker's output, or that output optimized with `wasm-opt -Oz -g`.
// No dependencies, so the budget script needs nothing beyond Node.
//
// usage: node scripts/wasm-contributors.mjs FILE.wasm [TOP=3]

import fs from "node:fs";

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error("usage: wasm-contributors.mjs FILE.wasm [TOP]");
  process.exit(2);
}
const top = Number(topArg ?? 3);
const bytes = fs.readFileSync(file);

let pos = 8; // magic and version
function leb() {
  let result = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[pos++];
    result += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return result;
    shift += 7;
  }
}
function name() {
  const length = leb();
  const text = bytes.toString("utf8", pos, pos + length);
  pos += length;
  return text;
}

let importedFunctions = 0;
const bodySizes = []; // by defined-function index
const names = new Map(); // function index -> name
let dataBytes = 0;

while (pos < bytes.length) {
  const id = bytes[pos++];
  const size = leb();
  const end = pos + size;
  if (id === 2) {
    // imports: count the functions, which come first in the index space
    for (let count = leb(); count > 0; count--) {
      name();
      name();
      const kind = bytes[pos++];
      if (kind === 0) {
        importedFunctions++;
        leb();
      } else if (kind === 1) {
        pos++;
        const flags = leb();
        leb();
        if (flags & 1) leb();
      } else if (kind === 2) {
        const flags = leb();
        leb();
        if (flags & 1) leb();
      } else if (kind === 3) {
        pos += 2;
      } else {
        break; // a kind this reader does not need; the rest is skipped
      }
    }
  } else if (id === 10) {
    for (let count = leb(); count > 0; count--) {
      const bodySize = leb();
      bodySizes.push(bodySize);
      pos += bodySize;
    }
  } else if (id === 11) {
    dataBytes += size;
  } else if (id === 0 && name() === "name") {
    while (pos < end) {
      const sub = bytes[pos++];
      const subSize = leb();
      const subEnd = pos + subSize;
      if (sub === 1) {
        for (let count = leb(); count > 0; count--) {
          const index = leb();
          names.set(index, name());
        }
      }
      pos = subEnd;
    }
  }
  pos = end;
}

// Legacy Rust symbols (`_ZN…E`): the path's parts, unescaped.
function demangleLegacy(symbol) {
  const parts = [];
  let i = 3;
  while (i < symbol.length && symbol[i] !== "E") {
    const digits = symbol.slice(i).match(/^\d+/);
    if (!digits) break;
    i += digits[0].length;
    parts.push(symbol.slice(i, i + Number(digits[0])));
    i += Number(digits[0]);
  }
  if (parts.length > 1 && /^h[0-9a-f]{16}$/.test(parts[parts.length - 1])) parts.pop();
  const escapes = { SP: "@", BP: "*", RF: "&", LT: "<", GT: ">", LP: "(", RP: ")", C: "," };
  return parts
    .map((part) =>
      part
        .replace(/^_\$/, "$")
        .replace(/\.\./g, "::")
        .replace(/\$u([0-9a-f]+)\$/g, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
        .replace(/\$([A-Z]+)\$/g, (all, code) => escapes[code] ?? all),
    )
    .join("::");
}

function demangle(symbol) {
  return symbol.startsWith("_ZN") ? demangleLegacy(symbol) : symbol;
}

// `<alloc::vec::Vec<T> as core::fmt::Debug>::fmt` → `alloc`;
// `<T as tachys::view::IntoAny>::into_any` → `tachys`; v0 symbols
// (`_RNv…Cs…_4core…`) → their first crate root.
function crateOf(fn) {
  if (fn.startsWith("_R")) {
    const root = fn.match(/C(?:s[0-9A-Za-z]*_)?(\d+)/);
    if (root) {
      const at = root.index + root[0].length;
      return fn.slice(at, at + Number(root[1]));
    }
  }
  const bare = fn.replace(/^[<&(\s]*(?:(?:dyn|mut|impl) )*[<&\s]*/, "");
  const direct = bare.match(/^([A-Za-z_][A-Za-z0-9_]*)::/);
  if (direct && direct[1] !== "impl") return direct[1];
  const trait = bare.match(/ (?:as|for) ([A-Za-z_][A-Za-z0-9_]*)::/);
  if (trait) return trait[1];
  return fn.includes("::") ? "(other)" : "(runtime and glue)";
}

const codeTotal = bodySizes.reduce((a, b) => a + b, 0);
const byCrate = new Map();
const functions = bodySizes.map((size, i) => {
  const fn = demangle(names.get(importedFunctions + i) ?? `code[${i}]`);
  const crate = crateOf(fn);
  byCrate.set(crate, (byCrate.get(crate) ?? 0) + size);
  return { fn, size };
});
byCrate.set("(data segments)", dataBytes);

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const pct = (n) => `${((100 * n) / (codeTotal + dataBytes)).toFixed(1)}%`;
console.log(`biggest contributors (of ${kb(codeTotal)} code + ${kb(dataBytes)} data):`);
[...byCrate.entries()]
  .sort((a, b) => b[1] - a[1])
  .slice(0, top)
  .forEach(([crate, size], i) => console.log(`  ${i + 1}. ${crate.padEnd(24)} ${kb(size).padStart(10)}  ${pct(size)}`));
console.log("biggest functions:");
functions
  .sort((a, b) => b.size - a.size)
  .slice(0, top)
  .forEach(({ fn, size }, i) => console.log(`  ${i + 1}. ${kb(size).padStart(9)}  ${fn.length > 110 ? fn.slice(0, 107) + "…" : fn}`));

// WASM_GREP=pattern: the total size of the functions whose name matches.
if (process.env.WASM_GREP) {
  const pattern = new RegExp(process.env.WASM_GREP);
  const matching = functions.filter(({ fn }) => pattern.test(fn));
  const total = matching.reduce((sum, { size }) => sum + size, 0);
  console.log(`/${process.env.WASM_GREP}/: ${matching.length} functions, ${kb(total)} (${pct(total)})`);
}

// WASM_DUMP=file: every function's size and name, one per line.
if (process.env.WASM_DUMP) {
  fs.writeFileSync(process.env.WASM_DUMP, functions.map(({ fn, size }) => `${size}\t${fn}`).join("\n"));
}
