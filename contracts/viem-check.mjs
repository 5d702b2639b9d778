// Checks a BAL proof bundle against an Ethereum JSON-RPC endpoint with viem, a client the BAL
// did not write: reads the chain id, the anchoring transaction's receipt and its Anchored log,
// and verifies the proof through the contract's own `verify`. Prints one JSON object.
//
//   node viem-check.mjs RPC_URL BUNDLE.json
import { readFileSync } from "node:fs";
import { createPublicClient, http, parseAbi, parseAbiItem } from "viem";

const [rpc, bundlePath] = process.argv.slice(2);
if (!rpc || !bundlePath) {
  console.error("usage: node viem-check.mjs RPC_URL BUNDLE.json");
  process.exit(2);
}
const bundle = JSON.parse(readFileSync(bundlePath, "utf8"));
const client = createPublicClient({ transport: http(rpc) });
const abi = parseAbi([
  "function verify(bytes32 root, bytes32[] proof, bytes32 leaf) view returns (bool)",
  "function anchoredAt(bytes32 root) view returns (uint64)",
]);

const chainId = await client.getChainId();
const receipt = await client.getTransactionReceipt({ hash: bundle.transaction });
const logs = await client.getLogs({
  address: bundle.contract,
  event: parseAbiItem(
    "event Anchored(bytes32 indexed root, address indexed anchorer, uint32 leafCount, bytes32 batchId)",
  ),
  args: { root: bundle.root },
  fromBlock: 0n,
});
const verified = await client.readContract({
  address: bundle.contract,
  abi,
  functionName: "verify",
  args: [bundle.root, bundle.proof, bundle.leaf],
});
const forged = await client.readContract({
  address: bundle.contract,
  abi,
  functionName: "verify",
  args: [bundle.root, bundle.proof, `0x${"00".repeat(32)}`],
});
const anchoredAt = await client.readContract({
  address: bundle.contract,
  abi,
  functionName: "anchoredAt",
  args: [bundle.root],
});
console.log(
  JSON.stringify({
    chainId,
    receiptStatus: receipt.status,
    receiptBlock: Number(receipt.blockNumber),
    logs: logs.length,
    logTransaction: logs[0]?.transactionHash ?? null,
    verified,
    forged,
    anchoredAt: Number(anchoredAt),
  }),
);
