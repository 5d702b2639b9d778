// Test vectors from OpenZeppelin's own StandardMerkleTree (the npm package pinned in
// package.json), for the BAL's leaf types. The Rust tree must match them exactly
// (crates/bal-core/tests/oz_merkle_vectors.rs).
//   node merkle-vectors.mjs           writes the vectors
//   node merkle-vectors.mjs --check   exits 1 when the committed vectors differ
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "crates", "bal-core", "tests", "fixtures", "oz-merkle-vectors.jsonl");
const types = ["address", "string", "uint64", "uint64", "bytes32"];
// Must stay in step with `values` in the Rust test.
const values = (i) => [
  "0x4FD173C02de9004A7aFB2b46f70bBA83c86f6B12",
  `platone/producer${i % 3}/meter-${i}`,
  String(i + 1),
  String(1700000000000 + i * 1000),
  "0x" + (i + 1).toString(16).padStart(64, "0"),
];

let text = "";
for (const n of [1, 2, 3, 5, 8]) {
  const vs = Array.from({ length: n }, (_, i) => values(i));
  const tree = StandardMerkleTree.of(vs, types);
  const line = { n, root: tree.root, leaves: [], proofs: [] };
  for (let i = 0; i < n; i++) {
    line.leaves.push(tree.leafHash(vs[i]));
    line.proofs.push(tree.getProof(i));
  }
  text += JSON.stringify(line) + "\n";
}

if (process.argv.includes("--check")) {
  if (!existsSync(out) || readFileSync(out, "utf8") !== text) {
    console.error(`${out} differs from @openzeppelin/merkle-tree's output`);
    process.exit(1);
  }
  console.log("merkle vectors match @openzeppelin/merkle-tree");
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
