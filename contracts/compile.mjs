// Compiles Certification.sol with the npm package solc (the version pinned in package.json) and
// OpenZeppelin's contracts from node_modules, and writes artifacts/Certification.json: the ABI
// and bytecode the BAL embeds, so that building the BAL needs no Node.
//   node compile.mjs           writes the artifact
//   node compile.mjs --check   exits 1 when the committed artifact differs from a fresh compile
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const source = "Certification.sol";
const out = join(here, "artifacts", "Certification.json");

const input = {
  language: "Solidity",
  sources: { [source]: { content: readFileSync(join(here, source), "utf8") } },
  settings: {
    // Paris: no PUSH0, so the bytecode also runs on private chains configured before Shanghai.
    evmVersion: "paris",
    optimizer: { enabled: true, runs: 200 },
    // No metadata hash: the bytecode then depends on the source alone, not on file paths.
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

function findImports(path) {
  const file = join(here, "node_modules", path);
  return existsSync(file) ? { contents: readFileSync(file, "utf8") } : { error: `not found: ${path}` };
}

const result = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (result.errors ?? []).filter((e) => e.severity === "error");
for (const e of result.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(2);

const c = result.contracts[source].Certification;
const artifact = {
  contractName: "Certification",
  compiler: `solc ${solc.version()}`,
  settings: { evmVersion: input.settings.evmVersion, optimizer: input.settings.optimizer },
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
  deployedBytecode: "0x" + c.evm.deployedBytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";

if (process.argv.includes("--check")) {
  const committed = existsSync(out) ? readFileSync(out, "utf8") : "";
  if (committed !== text) {
    console.error(`${out} is stale: run (cd contracts && npm ci && node compile.mjs) and commit it`);
    process.exit(1);
  }
  console.log("artifact is up to date");
} else {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
